#include "layers/ops/rope.h"

#include <cmath>
#include <numbers>

#include "autograd/tape.h"
#include "kernels/cpu/rope.h"
#include "layers/ops/checks.h"
#include "layers/ops/dispatch.h"

#ifdef BRAID_CUDA
#include "kernels/cuda/rope.h"
#include "runtime/cuda_stream.h"
#include "runtime/device_copy.h"
#endif

namespace braid::ops {

namespace {

class RopeNode : public autograd::Node {
 public:
  RopeNode(Shape shape, DType dtype, Device device, std::vector<double> inverse_frequencies,
           int64_t position_offset)
      : shape_(std::move(shape)), dtype_(dtype), device_(device),
        inverse_frequencies_(std::move(inverse_frequencies)), position_offset_(position_offset) {}
  const char* name() const override { return "rope"; }

  std::vector<Tensor> backward(const std::vector<Tensor>& grad_outputs) override {
#ifdef BRAID_CUDA
    if (device_.is_cuda()) {
      // The kernel reads and writes f32 gradients whatever the activation dtype (a bf16 one is
      // widened; an f32 result for a bf16 value is allowed, autograd/variable.h).
      if (!grad_outputs[0].defined()) return {Tensor::zeros(shape_, DType::f32, device_)};
      Tensor d_out = grad_outputs[0].to(DType::f32).contiguous();
      Tensor d_x = Tensor::empty(shape_, DType::f32, device_);
      cuda_set_device(device_.index);
      kernels::cuda::rope_backward(d_out.data<float>(), d_x.data<float>(),
                                   inverse_frequencies_.data(), shape_[0], shape_[1], shape_[2],
                                   shape_[3], position_offset_, compute_stream());
      return {d_x};
    }
#endif
    if (!grad_outputs[0].defined()) return {Tensor::zeros(shape_, dtype_)};
    Tensor d_out = grad_outputs[0].to(dtype_).contiguous();
    Tensor d_x = Tensor::empty(shape_, dtype_);
    dispatch_cpu_float("rope", dtype_, [&]<typename T>() {
      kernels::cpu::rope_backward<T>(d_out.data<T>(), d_x.data<T>(), inverse_frequencies_.data(),
                                     shape_[0], shape_[1], shape_[2], shape_[3], position_offset_);
    });
    return {d_x};
  }

 private:
  Shape shape_;
  DType dtype_;
  Device device_;
  std::vector<double> inverse_frequencies_;
  int64_t position_offset_;
};

}  // namespace

std::vector<double> rope_inverse_frequencies(const RopeConfig& config, int64_t head_dim) {
  BRAID_CHECK(head_dim > 0 && head_dim % 2 == 0, "rope: head dim must be even and positive, got ",
              head_dim);
  BRAID_CHECK(config.theta > 0, "rope: theta must be positive, got ", config.theta);
  if (config.llama3_scaling) {
    BRAID_CHECK(config.factor > 0 && config.original_context > 0 && config.low_freq_factor > 0,
                "rope: Llama-3 scaling needs positive factor, low_freq_factor and "
                "original_context, got ",
                config.factor, ", ", config.low_freq_factor, ", ", config.original_context);
    BRAID_CHECK(config.high_freq_factor > config.low_freq_factor,
                "rope: high_freq_factor (", config.high_freq_factor,
                ") must exceed low_freq_factor (", config.low_freq_factor, ")");
  }
  const double context = double(config.original_context);
  std::vector<double> frequencies(head_dim / 2);
  for (int64_t i = 0; i < head_dim / 2; ++i) {
    double frequency = std::pow(config.theta, -2.0 * double(i) / double(head_dim));
    if (config.llama3_scaling) {
      double wavelength = 2 * std::numbers::pi / frequency;
      if (wavelength > context / config.low_freq_factor) {
        frequency /= config.factor;
      } else if (wavelength >= context / config.high_freq_factor) {
        double s = (context / wavelength - config.low_freq_factor) /
                   (config.high_freq_factor - config.low_freq_factor);
        frequency = (1 - s) * frequency / config.factor + s * frequency;
      }
    }
    frequencies[i] = frequency;
  }
  return frequencies;
}

autograd::Var rope(const autograd::Var& x, const RopeConfig& config, int64_t position_offset) {
  check_dim("rope", "x (B, T, H, D)", x->value, 4);
  check_floating("rope", "x", x->value);
  check_backend("rope", "x", x->value);
  BRAID_CHECK(x->value.size(3) % 2 == 0, "rope: head dim must be even, got x of shape ",
              shape_str(x->value.shape()));
  BRAID_CHECK(position_offset >= 0, "rope: position_offset must be >= 0, got ", position_offset);
  Tensor xc = x->value.contiguous();
  const Shape& shape = xc.shape();
  std::vector<double> frequencies = rope_inverse_frequencies(config, shape[3]);
  Tensor out = Tensor::empty(shape, xc.dtype(), xc.device());
  if (xc.device().is_cuda()) {
    // (Reached only in CUDA builds: check_backend refuses CUDA tensors elsewhere.)
#ifdef BRAID_CUDA
    cuda_set_device(xc.device().index);
    kernels::cuda::rope_forward(xc.raw_data(), out.raw_data(), frequencies.data(), shape[0],
                                shape[1], shape[2], shape[3], position_offset, xc.dtype(),
                                compute_stream());
#endif
  } else {
    dispatch_cpu_float("rope", xc.dtype(), [&]<typename T>() {
      kernels::cpu::rope_forward<T>(xc.data<T>(), out.data<T>(), frequencies.data(), shape[0],
                                    shape[1], shape[2], shape[3], position_offset);
    });
  }
  return autograd::record(
      std::make_shared<RopeNode>(shape, xc.dtype(), xc.device(), std::move(frequencies),
                                 position_offset),
      {x}, out);
}

}  // namespace braid::ops
