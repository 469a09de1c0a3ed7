#include "layers/ops/gated_rmsnorm.h"

#include <cmath>

#include "autograd/tape.h"
#include "kernels/cpu/gated_rmsnorm.h"
#include "layers/ops/checks.h"
#include "layers/ops/dispatch.h"
#include "layers/ops/layout.h"

#ifdef BRAID_CUDA
#include "kernels/cuda/gated_rmsnorm.h"
#include "runtime/cuda_stream.h"
#include "runtime/device_copy.h"
#endif

namespace braid::ops {

namespace {

class GatedRmsnormNode : public autograd::Node {
 public:
  GatedRmsnormNode(Tensor y, Tensor z, Tensor weight, Tensor rstd, int64_t groups)
      : y_(std::move(y)), z_(std::move(z)), weight_(std::move(weight)), rstd_(std::move(rstd)),
        groups_(groups) {}
  const char* name() const override { return "gated_rmsnorm"; }

  std::vector<Tensor> backward(const std::vector<Tensor>& grad_outputs) override {
    const int64_t channels = weight_.numel();
#ifdef BRAID_CUDA
    if (y_.device().is_cuda()) {
      // y, z, out and their gradients in y's dtype; rstd, the weight and its gradient in f32.
      const Device device = y_.device();
      cuda_set_device(device.index);
      const DType dtype = y_.dtype();
      Tensor d_out = grad_outputs[0].to(dtype).contiguous();
      Tensor d_y = Tensor::empty(y_.shape(), dtype, device);
      Tensor d_z = Tensor::empty(z_.shape(), dtype, device);
      Tensor d_weight = Tensor::empty(weight_.shape(), DType::f32, device);
      const int64_t rows = y_.numel() / channels, group_size = channels / groups_;
      const size_t workspace_floats =
          kernels::cuda::gated_rmsnorm_workspace_floats(rows, groups_, group_size, dtype);
      Tensor workspace = Tensor::empty({int64_t(workspace_floats)}, DType::f32, device);
      kernels::cuda::gated_rmsnorm_backward(y_.raw_data(), z_.raw_data(), weight_.data<float>(),
                                            rstd_.data<float>(), d_out.raw_data(), d_y.raw_data(),
                                            d_z.raw_data(), d_weight.data<float>(), rows, groups_,
                                            group_size, dtype, workspace.data<float>(),
                                            compute_stream());
      return {d_y, d_z, d_weight};
    }
#endif
    Tensor d_out = grad_outputs[0].to(y_.dtype()).contiguous();
    Tensor d_y = Tensor::empty(y_.shape(), y_.dtype());
    Tensor d_z = Tensor::empty(z_.shape(), z_.dtype());
    Tensor d_weight = Tensor::empty(weight_.shape(), weight_.dtype());
    dispatch_cpu_float("gated_rmsnorm", y_.dtype(), [&]<typename T>() {
      kernels::cpu::gated_rmsnorm_backward<T>(y_.data<T>(), z_.data<T>(), weight_.data<T>(),
                                              rstd_.data<T>(), d_out.data<T>(), d_y.data<T>(),
                                              d_z.data<T>(), d_weight.data<T>(),
                                              y_.numel() / channels, groups_, channels / groups_);
    });
    return {d_y, d_z, d_weight};
  }

 private:
  Tensor y_, z_, weight_, rstd_;
  int64_t groups_;
};

}  // namespace

autograd::Var gated_rmsnorm(const autograd::Var& y, const autograd::Var& z,
                            const autograd::Var& weight, int64_t groups, double eps) {
  const char* op = "gated_rmsnorm";
  BRAID_CHECK(y->value.dim() >= 1, op, ": y must have a channel dimension, got shape ",
              shape_str(y->value.shape()));
  check_floating(op, "y", y->value);
  check_same_shape(op, "y", y->value, "z", z->value);
  const int64_t channels = y->value.size(-1);
  BRAID_CHECK(groups >= 1 && channels >= 1 && channels % groups == 0, op, ": ", channels,
              " channels (y has shape ", shape_str(y->value.shape()), ") do not split into ", groups,
              " groups");
  check_shape(op, "weight", weight->value, {channels});
  check_same_type(op, "y", y->value, "z", z->value);
  check_backend(op, "y", y->value);
  check_param(op, "weight", weight->value, y->value);
  BRAID_CHECK(eps >= 0 && std::isfinite(eps), op, ": eps must be finite and >= 0, got ", eps);

  // Without a tape z may stay rows of a wider tensor (at decode, its slice of in_proj's output),
  // read in place; the backward reads z contiguous.
  const bool taped = autograd::any_requires_grad({y, z, weight});
  Tensor yc = y->value.contiguous(), w = weight->value.contiguous();
  Tensor zc = taped ? z->value.contiguous() : rows_in_place(z->value);
  const int64_t rows = yc.numel() / channels, z_row_stride = row_stride(zc);
#ifdef BRAID_CUDA
  if (yc.device().is_cuda()) {
    const Device device = yc.device();
    cuda_set_device(device.index);
    Tensor out = Tensor::empty(yc.shape(), yc.dtype(), device);
    Tensor rstd = Tensor::empty({rows, groups}, DType::f32, device);
    kernels::cuda::gated_rmsnorm_forward(yc.raw_data(), zc.raw_data(), w.data<float>(),
                                         out.raw_data(), rstd.data<float>(), rows, groups,
                                         channels / groups, float(eps), yc.dtype(),
                                         compute_stream(), z_row_stride);
    return autograd::record(std::make_shared<GatedRmsnormNode>(yc, zc, w, rstd, groups),
                            {y, z, weight}, out);
  }
#endif
  Tensor out = Tensor::empty(yc.shape(), yc.dtype());
  Tensor rstd = Tensor::empty({rows, groups}, yc.dtype());
  dispatch_cpu_float(op, yc.dtype(), [&]<typename T>() {
    kernels::cpu::gated_rmsnorm_forward<T>(yc.data<T>(), zc.data<T>(), w.data<T>(), out.data<T>(),
                                           rstd.data<T>(), rows, groups, channels / groups, eps,
                                           z_row_stride);
  });
  return autograd::record(std::make_shared<GatedRmsnormNode>(yc, zc, w, rstd, groups),
                          {y, z, weight}, out);
}

}  // namespace braid::ops
