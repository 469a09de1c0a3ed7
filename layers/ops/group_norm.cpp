#include "layers/ops/group_norm.h"

#include <cmath>

#include "autograd/tape.h"
#include "kernels/cpu/group_norm.h"
#include "layers/ops/checks.h"
#include "layers/ops/dispatch.h"

#ifdef BRAID_CUDA
#include "kernels/cuda/group_norm.h"
#include "runtime/cuda_stream.h"
#include "runtime/device_copy.h"
#endif

namespace braid::ops {

namespace {

class GroupNormNode : public autograd::Node {
 public:
  GroupNormNode(Tensor x, Tensor weight, Tensor mean, Tensor rstd, int64_t groups)
      : x_(std::move(x)), weight_(std::move(weight)), mean_(std::move(mean)),
        rstd_(std::move(rstd)), groups_(groups) {}
  const char* name() const override { return "group_norm"; }

  std::vector<Tensor> backward(const std::vector<Tensor>& grad_outputs) override {
    const int64_t channels = weight_.numel();
#ifdef BRAID_CUDA
    if (x_.device().is_cuda()) {
      // x, out and their gradients in x's dtype; statistics, parameters and their gradients in f32.
      const Device device = x_.device();
      cuda_set_device(device.index);
      const DType dtype = x_.dtype();
      Tensor d_out = grad_outputs[0].to(dtype).contiguous();
      Tensor d_x = Tensor::empty(x_.shape(), dtype, device);
      Tensor d_weight = Tensor::empty(weight_.shape(), DType::f32, device);
      Tensor d_bias = Tensor::empty(weight_.shape(), DType::f32, device);
      const int64_t rows = x_.numel() / channels, group_size = channels / groups_;
      Tensor workspace = Tensor::empty(
          {int64_t(kernels::cuda::group_norm_workspace_floats(rows, groups_, group_size, dtype))},
          DType::f32, device);
      kernels::cuda::group_norm_backward(x_.raw_data(), weight_.data<float>(), mean_.data<float>(),
                                         rstd_.data<float>(), d_out.raw_data(), d_x.raw_data(),
                                         d_weight.data<float>(), d_bias.data<float>(), rows,
                                         groups_, group_size, dtype, workspace.data<float>(),
                                         compute_stream());
      return {d_x, d_weight, d_bias};
    }
#endif
    Tensor d_out = grad_outputs[0].to(x_.dtype()).contiguous();
    Tensor d_x = Tensor::empty(x_.shape(), x_.dtype());
    Tensor d_weight = Tensor::empty(weight_.shape(), x_.dtype());
    Tensor d_bias = Tensor::empty(weight_.shape(), x_.dtype());
    dispatch_cpu_float("group_norm", x_.dtype(), [&]<typename T>() {
      kernels::cpu::group_norm_backward<T>(x_.data<T>(), weight_.data<T>(), mean_.data<T>(),
                                           rstd_.data<T>(), d_out.data<T>(), d_x.data<T>(),
                                           d_weight.data<T>(), d_bias.data<T>(),
                                           x_.numel() / channels, groups_, channels / groups_);
    });
    return {d_x, d_weight, d_bias};
  }

 private:
  Tensor x_, weight_, mean_, rstd_;
  int64_t groups_;
};

}  // namespace

autograd::Var group_norm(const autograd::Var& x, const autograd::Var& weight,
                         const autograd::Var& bias, int64_t groups, double eps) {
  const char* op = "group_norm";
  BRAID_CHECK(x->value.dim() >= 1, op, ": x must have a channel dimension, got shape ",
              shape_str(x->value.shape()));
  check_floating(op, "x", x->value);
  const int64_t channels = x->value.size(-1);
  BRAID_CHECK(groups >= 1 && channels >= 1 && channels % groups == 0, op, ": ", channels,
              " channels (x has shape ", shape_str(x->value.shape()), ") do not split into ", groups,
              " groups");
  check_shape(op, "weight", weight->value, {channels});
  check_shape(op, "bias", bias->value, {channels});
  check_backend(op, "x", x->value);
  check_param(op, "weight", weight->value, x->value);
  check_param(op, "bias", bias->value, x->value);
  BRAID_CHECK(eps >= 0 && std::isfinite(eps), op, ": eps must be finite and >= 0, got ", eps);

  Tensor xc = x->value.contiguous(), w = weight->value.contiguous(), b = bias->value.contiguous();
  const int64_t rows = xc.numel() / channels;
#ifdef BRAID_CUDA
  if (xc.device().is_cuda()) {
    const Device device = xc.device();
    cuda_set_device(device.index);
    Tensor out = Tensor::empty(xc.shape(), xc.dtype(), device);
    Tensor mean = Tensor::empty({rows, groups}, DType::f32, device);
    Tensor rstd = Tensor::empty({rows, groups}, DType::f32, device);
    kernels::cuda::group_norm_forward(xc.raw_data(), w.data<float>(), b.data<float>(),
                                      out.raw_data(), mean.data<float>(), rstd.data<float>(), rows,
                                      groups, channels / groups, float(eps), xc.dtype(),
                                      compute_stream());
    return autograd::record(std::make_shared<GroupNormNode>(xc, w, mean, rstd, groups),
                            {x, weight, bias}, out);
  }
#endif
  Tensor out = Tensor::empty(xc.shape(), xc.dtype());
  Tensor mean = Tensor::empty({rows, groups}, xc.dtype());
  Tensor rstd = Tensor::empty({rows, groups}, xc.dtype());
  dispatch_cpu_float(op, xc.dtype(), [&]<typename T>() {
    kernels::cpu::group_norm_forward<T>(xc.data<T>(), w.data<T>(), b.data<T>(), out.data<T>(),
                                        mean.data<T>(), rstd.data<T>(), rows, groups,
                                        channels / groups, eps);
  });
  return autograd::record(std::make_shared<GroupNormNode>(xc, w, mean, rstd, groups),
                          {x, weight, bias}, out);
}

}  // namespace braid::ops
