#include "layers/ops/swiglu.h"

#include "autograd/tape.h"
#include "kernels/cpu/swiglu.h"
#include "layers/ops/checks.h"
#include "layers/ops/dispatch.h"

#ifdef BRAID_CUDA
#include "kernels/cuda/swiglu.h"
#include "runtime/cuda_stream.h"
#include "runtime/device_copy.h"
#endif

namespace braid::ops {

namespace {

class SwigluNode : public autograd::Node {
 public:
  SwigluNode(Tensor gate, Tensor up) : gate_(std::move(gate)), up_(std::move(up)) {}
  const char* name() const override { return "swiglu"; }

  std::vector<Tensor> backward(const std::vector<Tensor>& grad_outputs) override {
#ifdef BRAID_CUDA
    if (gate_.device().is_cuda()) {
      // Values in their dtype, gradients in f32.
      const Device device = gate_.device();
      cuda_set_device(device.index);
      Tensor d_out = grad_outputs[0].to(DType::f32).contiguous();
      Tensor d_gate = Tensor::empty(gate_.shape(), DType::f32, device);
      Tensor d_up = Tensor::empty(up_.shape(), DType::f32, device);
      kernels::cuda::swiglu_backward(gate_.raw_data(), up_.raw_data(), d_out.data<float>(),
                                     d_gate.data<float>(), d_up.data<float>(), gate_.numel(),
                                     gate_.dtype(), compute_stream());
      return {d_gate, d_up};
    }
#endif
    Tensor d_out = grad_outputs[0].to(gate_.dtype()).contiguous();
    Tensor d_gate = Tensor::empty(gate_.shape(), gate_.dtype());
    Tensor d_up = Tensor::empty(up_.shape(), up_.dtype());
    dispatch_cpu_float("swiglu", gate_.dtype(), [&]<typename T>() {
      kernels::cpu::swiglu_backward<T>(gate_.data<T>(), up_.data<T>(), d_out.data<T>(),
                                       d_gate.data<T>(), d_up.data<T>(), gate_.numel());
    });
    return {d_gate, d_up};
  }

 private:
  Tensor gate_, up_;
};

}  // namespace

autograd::Var swiglu(const autograd::Var& gate, const autograd::Var& up) {
  check_same_shape("swiglu", "gate", gate->value, "up", up->value);
  check_same_type("swiglu", "gate", gate->value, "up", up->value);
  check_backend("swiglu", "gate", gate->value);
  Tensor g = gate->value.contiguous(), u = up->value.contiguous();
#ifdef BRAID_CUDA
  if (g.device().is_cuda()) {
    cuda_set_device(g.device().index);
    Tensor out = Tensor::empty(g.shape(), g.dtype(), g.device());
    kernels::cuda::swiglu_forward(g.raw_data(), u.raw_data(), out.raw_data(), g.numel(), g.dtype(),
                                  compute_stream());
    return autograd::record(std::make_shared<SwigluNode>(g, u), {gate, up}, out);
  }
#endif
  Tensor out = Tensor::empty(g.shape(), g.dtype());
  dispatch_cpu_float("swiglu", g.dtype(), [&]<typename T>() {
    kernels::cpu::swiglu_forward<T>(g.data<T>(), u.data<T>(), out.data<T>(), g.numel());
  });
  return autograd::record(std::make_shared<SwigluNode>(g, u), {gate, up}, out);
}

}  // namespace braid::ops
