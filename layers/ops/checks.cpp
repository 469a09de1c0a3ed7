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

}  // namespace braid::ops
