#include "autograd/variable.h"

#ifdef BRAID_CUDA
#include "kernels/cuda/elementwise.h"
#include "runtime/cuda_stream.h"
#include "runtime/device_copy.h"
#endif

namespace braid::autograd {

Var leaf(Tensor value, bool requires_grad, std::string name) {
  auto variable = std::make_shared<Variable>();
  variable->value = std::move(value);
  variable->requires_grad = requires_grad;
  variable->name = std::move(name);
  return variable;
}

DType grad_dtype(DType value_dtype) {
  return value_dtype == DType::f64 || value_dtype == DType::bf16 ? value_dtype : DType::f32;
}

namespace {

template <typename T>
void add_into(Tensor& total, const Tensor& delta) {
  T* out = total.data<T>();
  const T* in = delta.data<T>();
  const int64_t count = total.numel();
#pragma omp parallel for schedule(static) if (count > 65536)
  for (int64_t i = 0; i < count; ++i) out[i] += in[i];
}

}  // namespace

void accumulate_grad(Variable& variable, const Tensor& delta, bool adopt) {
  BRAID_CHECK(delta.shape() == variable.value.shape(), "gradient of shape ", shape_str(delta.shape()),
              " for a variable of shape ", shape_str(variable.value.shape()),
              variable.name.empty() ? "" : " (", variable.name, variable.name.empty() ? "" : ")");
  DType dtype = grad_dtype(variable.value.dtype());
  if (dtype == DType::bf16 && delta.dtype() == DType::f32) dtype = DType::f32;  // see the header
  if (!variable.grad.defined()) {
    if (adopt && delta.dtype() == dtype && delta.is_contiguous()) {
      variable.grad = delta;
      return;
    }
    variable.grad = Tensor::empty(delta.shape(), dtype, delta.device());
    variable.grad.copy_from(delta);
    return;
  }
  BRAID_CHECK(delta.device() == variable.grad.device(), "gradient on ", delta.device().to_string(),
              " for a gradient held on ", variable.grad.device().to_string());
#ifdef BRAID_CUDA
  if (variable.grad.device().is_cuda()) {  // mixed dtypes summed in fp32, stored in the gradient's
    const Tensor addend = delta.contiguous();
    const DType total = variable.grad.dtype();
    cuda_set_device(variable.grad.device().index);
    kernels::cuda::binary(kernels::cuda::BinaryOp::add, variable.grad.raw_data(), total,
                          addend.raw_data(), addend.dtype(), variable.grad.raw_data(), total,
                          variable.grad.numel(), compute_stream());
    return;
  }
#endif
  const Tensor addend = delta.to(variable.grad.dtype()).contiguous();
  if (variable.grad.dtype() == DType::f64) add_into<double>(variable.grad, addend);
  else add_into<float>(variable.grad, addend);
}

}  // namespace braid::autograd
