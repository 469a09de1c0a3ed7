#include "layers/ops/swiglu.h"

#include "autograd/tape.h"
#include "kernels/cpu/swiglu.h"
#include "layers/ops/checks.h"
#include "layers/ops/dispatch.h"
#include "layers/ops/layout.h"

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
      // Gradients in the activations' dtype (autograd/variable.h), computed in fp32.
      const Device device = gate_.device();
      const DType dtype = gate_.dtype();
      cuda_set_device(device.index);
      Tensor d_out = grad_outputs[0].to(dtype).contiguous();
      Tensor d_gate = Tensor::empty(gate_.shape(), dtype, device);
      Tensor d_up = Tensor::empty(up_.shape(), dtype, device);
      kernels::cuda::swiglu_backward(gate_.raw_data(), up_.raw_data(), d_out.raw_data(),
                                     d_gate.raw_data(), d_up.raw_data(), gate_.numel(), dtype,
                                     compute_stream());
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
  // Without a tape the gate may stay rows of a wider tensor (the intra-hybrid decode step's z, a
  // slice of in_proj's output), read in place; the backward reads both contiguous.
  const bool taped = autograd::any_requires_grad({gate, up});
  Tensor g = taped ? gate->value.contiguous() : rows_in_place(gate->value), u = up->value.contiguous();
  const int64_t columns = g.dim() > 0 ? g.size(-1) : 1, gate_row_stride = g.is_contiguous() ? 0 : row_stride(g);
#ifdef BRAID_CUDA
  if (g.device().is_cuda()) {
    cuda_set_device(g.device().index);
    Tensor out = Tensor::empty(g.shape(), g.dtype(), g.device());
    kernels::cuda::swiglu_forward(g.raw_data(), u.raw_data(), out.raw_data(), g.numel(), g.dtype(),
                                  compute_stream(), columns, gate_row_stride);
    return autograd::record(std::make_shared<SwigluNode>(g, u), {gate, up}, out);
  }
#endif
  Tensor out = Tensor::empty(g.shape(), g.dtype());
  dispatch_cpu_float("swiglu", g.dtype(), [&]<typename T>() {
    kernels::cpu::swiglu_forward<T>(g.data<T>(), u.data<T>(), out.data<T>(), g.numel(), columns, gate_row_stride);
  });
  return autograd::record(std::make_shared<SwigluNode>(g, u), {gate, up}, out);
}

}  // namespace braid::ops
