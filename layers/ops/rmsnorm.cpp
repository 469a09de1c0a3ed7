#include "layers/ops/rmsnorm.h"

#include "autograd/tape.h"
#include "kernels/cpu/rmsnorm.h"
#include "layers/ops/checks.h"
#include "layers/ops/dispatch.h"

#ifdef BRAID_CUDA
#include "kernels/cuda/rmsnorm.h"
#include "runtime/cuda_stream.h"
#include "runtime/device_copy.h"
#endif

namespace braid::ops {

namespace {

// Saves the input of the normalization (x, or the sum in the fused form), the weight and rstd.
// Inputs are (x, weight) for rmsnorm and (x, residual, weight) for add_rmsnorm, whose outputs are
// (sum, normed): the gradient of sum joins d_x, and x and residual share it.
class RmsnormNode : public autograd::Node {
 public:
  RmsnormNode(Tensor normalized_input, Tensor weight, Tensor rstd, bool fused_add)
      : input_(std::move(normalized_input)),
        weight_(std::move(weight)),
        rstd_(std::move(rstd)),
        fused_add_(fused_add) {}
  const char* name() const override { return fused_add_ ? "add_rmsnorm" : "rmsnorm"; }

  std::vector<Tensor> backward(const std::vector<Tensor>& grad_outputs) override {
#ifdef BRAID_CUDA
    if (input_.device().is_cuda()) return backward_cuda(grad_outputs);
#endif
    const DType dtype = input_.dtype();
    const Tensor& d_normed_in = grad_outputs[fused_add_ ? 1 : 0];
    Tensor d_normed = d_normed_in.defined() ? d_normed_in.to(dtype).contiguous()
                                            : Tensor::zeros(input_.shape(), dtype);
    Tensor d_sum;
    if (fused_add_ && grad_outputs[0].defined()) d_sum = grad_outputs[0].to(dtype).contiguous();
    Tensor d_input = Tensor::empty(input_.shape(), dtype),
           d_weight = Tensor::empty(weight_.shape(), dtype);
    const int64_t dim = weight_.numel(), rows = input_.numel() / dim;
    dispatch_cpu_float(name(), dtype, [&]<typename T>() {
      kernels::cpu::rmsnorm_backward<T>(input_.data<T>(), weight_.data<T>(), rstd_.data<T>(),
                                        d_normed.data<T>(),
                                        d_sum.defined() ? d_sum.data<T>() : nullptr,
                                        d_input.data<T>(), d_weight.data<T>(), rows, dim);
    });
    if (fused_add_) return {d_input, d_input, d_weight};
    return {d_input, d_weight};
  }

 private:
#ifdef BRAID_CUDA
  // The same gradients on the input's device: the activations' gradients in their dtype (the
  // kernel reads and writes them there), rstd, the weight and its gradient in f32.
  std::vector<Tensor> backward_cuda(const std::vector<Tensor>& grad_outputs) {
    const Device device = input_.device();
    cuda_set_device(device.index);
    const DType dtype = input_.dtype();
    const Tensor& d_normed_in = grad_outputs[fused_add_ ? 1 : 0];
    Tensor d_normed = d_normed_in.defined() ? d_normed_in.to(dtype).contiguous()
                                            : Tensor::zeros(input_.shape(), dtype, device);
    Tensor d_sum;
    if (fused_add_ && grad_outputs[0].defined()) d_sum = grad_outputs[0].to(dtype).contiguous();
    Tensor d_input = Tensor::empty(input_.shape(), dtype, device),
           d_weight = Tensor::empty(weight_.shape(), DType::f32, device);
    const int64_t dim = weight_.numel(), rows = input_.numel() / dim;
    Tensor workspace = Tensor::empty(
        {int64_t(kernels::cuda::rmsnorm_workspace_floats(rows, dim, dtype))}, DType::f32, device);
    kernels::cuda::rmsnorm_backward(input_.raw_data(), weight_.data<float>(), rstd_.data<float>(),
                                    d_normed.raw_data(),
                                    d_sum.defined() ? d_sum.raw_data() : nullptr,
                                    d_input.raw_data(), d_weight.data<float>(), rows, dim, dtype,
                                    workspace.data<float>(), compute_stream());
    if (fused_add_) return {d_input, d_input, d_weight};
    return {d_input, d_weight};
  }
#endif

  Tensor input_, weight_, rstd_;
  bool fused_add_;
};

void check_rmsnorm_args(const char* op, const Tensor& x, const Tensor& weight, double eps) {
  BRAID_CHECK(x.defined() && weight.defined() && x.dim() >= 1 && weight.dim() == 1 &&
                  weight.size(0) == x.size(-1) && weight.size(0) > 0,
              op, ": x has shape ", shape_str(x.shape()), " but weight has shape ",
              shape_str(weight.shape()),
              ": weight must be one non-empty vector as long as x's last dimension");
  check_backend(op, "x", x);
  check_param(op, "weight", weight, x);
  BRAID_CHECK(eps > 0, op, ": eps must be positive, got ", eps);
}

}  // namespace

autograd::Var rmsnorm(const autograd::Var& x, const autograd::Var& weight, double eps) {
  check_rmsnorm_args("rmsnorm", x->value, weight->value, eps);
  Tensor x_value = x->value.contiguous(), w_value = weight->value.contiguous();
  const int64_t dim = w_value.numel(), rows = x_value.numel() / dim;
#ifdef BRAID_CUDA
  if (x_value.device().is_cuda()) {
    const Device device = x_value.device();
    cuda_set_device(device.index);
    Tensor y = Tensor::empty(x_value.shape(), x_value.dtype(), device),
           rstd = Tensor::empty({rows}, DType::f32, device);
    kernels::cuda::rmsnorm_forward(x_value.raw_data(), w_value.data<float>(), y.raw_data(),
                                   rstd.data<float>(), rows, dim, float(eps), x_value.dtype(),
                                   compute_stream());
    return autograd::record(std::make_shared<RmsnormNode>(x_value, w_value, rstd, false),
                            {x, weight}, y);
  }
#endif
  Tensor y = Tensor::empty(x_value.shape(), x_value.dtype()),
         rstd = Tensor::empty({rows}, x_value.dtype());
  dispatch_cpu_float("rmsnorm", x_value.dtype(), [&]<typename T>() {
    kernels::cpu::rmsnorm_forward<T>(x_value.data<T>(), w_value.data<T>(), y.data<T>(),
                                     rstd.data<T>(), rows, dim, T(eps));
  });
  return autograd::record(std::make_shared<RmsnormNode>(x_value, w_value, rstd, false), {x, weight},
                          y);
}

AddRmsnormResult add_rmsnorm(const autograd::Var& x, const autograd::Var& residual,
                             const autograd::Var& weight, double eps) {
  check_same_shape("add_rmsnorm", "x", x->value, "residual", residual->value);
  check_same_type("add_rmsnorm", "x", x->value, "residual", residual->value);
  check_rmsnorm_args("add_rmsnorm", x->value, weight->value, eps);
  Tensor x_value = x->value.contiguous(), r_value = residual->value.contiguous();
  Tensor w_value = weight->value.contiguous();
  const int64_t dim = w_value.numel(), rows = x_value.numel() / dim;
  const DType dtype = x_value.dtype();
#ifdef BRAID_CUDA
  if (x_value.device().is_cuda()) {
    const Device device = x_value.device();
    cuda_set_device(device.index);
    Tensor sum = Tensor::empty(x_value.shape(), dtype, device),
           y = Tensor::empty(x_value.shape(), dtype, device);
    Tensor rstd = Tensor::empty({rows}, DType::f32, device);
    kernels::cuda::add_rmsnorm_forward(x_value.raw_data(), r_value.raw_data(),
                                       w_value.data<float>(), sum.raw_data(), y.raw_data(),
                                       rstd.data<float>(), rows, dim, float(eps), dtype,
                                       compute_stream());
    std::vector<autograd::Var> outputs = autograd::record(
        std::make_shared<RmsnormNode>(sum, w_value, rstd, true), {x, residual, weight}, {sum, y});
    return {outputs[0], outputs[1]};
  }
#endif
  Tensor sum = Tensor::empty(x_value.shape(), dtype), y = Tensor::empty(x_value.shape(), dtype);
  Tensor rstd = Tensor::empty({rows}, dtype);
  dispatch_cpu_float("add_rmsnorm", dtype, [&]<typename T>() {
    kernels::cpu::add_rmsnorm_forward<T>(x_value.data<T>(), r_value.data<T>(), w_value.data<T>(),
                                         sum.data<T>(), y.data<T>(), rstd.data<T>(), rows, dim,
                                         T(eps));
  });
  std::vector<autograd::Var> outputs = autograd::record(
      std::make_shared<RmsnormNode>(sum, w_value, rstd, true), {x, residual, weight}, {sum, y});
  return {outputs[0], outputs[1]};
}

}  // namespace braid::ops
