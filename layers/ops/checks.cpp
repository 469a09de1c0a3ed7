#include "layers/ops/checks.h"

namespace braid::ops {

void check_shape(const char* op, const char* what, const Tensor& tensor, const Shape& expected) {
  BRAID_CHECK(tensor.defined(), op, ": ", what, " is undefined");
  BRAID_CHECK(tensor.shape() == expected, op, ": ", what, " has shape ", shape_str(tensor.shape()),
              ", expected ", shape_str(expected));
}

void check_same_shape(const char* op, const char* what_a, const Tensor& a, const char* what_b,
                      const Tensor& b) {
  BRAID_CHECK(a.shape() == b.shape(), op, ": ", what_a, " has shape ", shape_str(a.shape()), " but ",
              what_b, " has shape ", shape_str(b.shape()));
}

void check_dim(const char* op, const char* what, const Tensor& tensor, int64_t dims) {
  BRAID_CHECK(tensor.defined(), op, ": ", what, " is undefined");
  BRAID_CHECK(tensor.dim() == dims, op, ": ", what, " must have ", dims, " dimensions, got shape ",
              shape_str(tensor.shape()));
}

void check_same_type(const char* op, const char* what_a, const Tensor& a, const char* what_b,
                     const Tensor& b) {
  BRAID_CHECK(a.dtype() == b.dtype(), op, ": ", what_a, " is ", dtype_name(a.dtype()), " but ",
              what_b, " is ", dtype_name(b.dtype()));
  BRAID_CHECK(a.device() == b.device(), op, ": ", what_a, " is on ", a.device().to_string(),
              " but ", what_b, " is on ", b.device().to_string());
}

void check_floating(const char* op, const char* what, const Tensor& tensor) {
  BRAID_CHECK(is_floating(tensor.dtype()), op, ": ", what, " must be floating point, got ",
              dtype_name(tensor.dtype()));
}

void check_dtype(const char* op, const char* what, const Tensor& tensor, DType dtype) {
  BRAID_CHECK(tensor.dtype() == dtype, op, ": ", what, " must be ", dtype_name(dtype), ", got ",
              dtype_name(tensor.dtype()));
}

void check_cpu(const char* op, const Tensor& tensor) {
  BRAID_CHECK(tensor.device().is_cpu(), op, ": no kernel for ", tensor.device().to_string(),
              " yet (the CUDA backend is a later issue)");
}

void check_backend(const char* op, const char* what, const Tensor& x) {
  if (x.device().is_cpu()) {
    BRAID_CHECK(x.dtype() == DType::f32 || x.dtype() == DType::f64, op, ": ", what,
                " on the CPU must be f32 or f64, got ", x.describe());
    return;
  }
#ifdef BRAID_CUDA
  BRAID_CHECK(x.dtype() == DType::f32 || x.dtype() == DType::bf16, op, ": ", what,
              " on CUDA must be f32 or bf16, got ", x.describe());
#else
  BRAID_FAIL(op, ": ", what, " is on ", x.device().to_string(), ", but this build has no CUDA");
#endif
}

void check_param(const char* op, const char* what, const Tensor& param, const Tensor& x) {
  const DType expected = x.dtype() == DType::bf16 ? DType::f32 : x.dtype();
  BRAID_CHECK(param.device() == x.device() && param.dtype() == expected, op, ": ", what, " is ",
              param.describe(), " but the input is ", x.describe(), "; it must be ",
              dtype_name(expected), " on ", x.device().to_string());
}

}  // namespace braid::ops
