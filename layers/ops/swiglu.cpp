#include "layers/ops/swiglu.h"

#include "autograd/tape.h"
#include "kernels/cpu/swiglu.h"
#include "layers/ops/checks.h"
#include "layers/ops/dispatch.h"

namespace braid::ops {

namespace {

class SwigluNode : public autograd::Node {
 public:
  SwigluNode(Tensor gate, Tensor up) : gate_(std::move(gate)), up_(std::move(up)) {}
  const char* name() const override { return "swiglu"; }

  std::vector<Tensor> backward(const std::vector<Tensor>& grad_outputs) override {
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
  check_cpu("swiglu", gate->value);
  Tensor g = gate->value.contiguous(), u = up->value.contiguous();
  Tensor out = Tensor::empty(g.shape(), g.dtype());
  dispatch_cpu_float("swiglu", g.dtype(), [&]<typename T>() {
    kernels::cpu::swiglu_forward<T>(g.data<T>(), u.data<T>(), out.data<T>(), g.numel());
  });
  return autograd::record(std::make_shared<SwigluNode>(g, u), {gate, up}, out);
}

}  // namespace braid::ops
