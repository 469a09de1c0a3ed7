#include "layers/ops/gating.h"

#include "autograd/tape.h"
#include "kernels/cpu/gating.h"
#include "layers/ops/checks.h"
#include "layers/ops/dispatch.h"

namespace braid::ops {

namespace {

class SigmoidNode : public autograd::Node {
 public:
  explicit SigmoidNode(Tensor out) : out_(std::move(out)) {}
  const char* name() const override { return "sigmoid"; }
  std::vector<Tensor> backward(const std::vector<Tensor>& grads) override {
    Tensor d_out = grads[0].to(out_.dtype()).contiguous();
    Tensor d_x = Tensor::empty(out_.shape(), out_.dtype());
    dispatch_cpu_float("sigmoid", out_.dtype(), [&]<typename T>() {
      kernels::cpu::sigmoid_backward<T>(out_.data<T>(), d_out.data<T>(), d_x.data<T>(), out_.numel());
    });
    return {d_x};
  }

 private:
  Tensor out_;
};

class MulScalarNode : public autograd::Node {
 public:
  MulScalarNode(Tensor x, Tensor s) : x_(std::move(x)), s_(std::move(s)) {}
  const char* name() const override { return "mul_scalar"; }
  std::vector<Tensor> backward(const std::vector<Tensor>& grads) override {
    Tensor d_out = grads[0].to(x_.dtype()).contiguous();
    Tensor d_x = Tensor::empty(x_.shape(), x_.dtype());
    double d_s = 0;
    dispatch_cpu_float("mul_scalar", x_.dtype(), [&]<typename T>() {
      d_s = kernels::cpu::mul_scalar_backward<T>(x_.data<T>(), s_.data<T>()[0], d_out.data<T>(),
                                                 d_x.data<T>(), x_.numel());
    });
    return {d_x, Tensor::full(s_.shape(), d_s, s_.dtype())};
  }

 private:
  Tensor x_, s_;
};

}  // namespace

autograd::Var sigmoid(const autograd::Var& x) {
  check_floating("sigmoid", "x", x->value);
  check_cpu("sigmoid", x->value);
  Tensor in = x->value.contiguous();
  Tensor out = Tensor::empty(in.shape(), in.dtype());
  dispatch_cpu_float("sigmoid", in.dtype(), [&]<typename T>() {
    kernels::cpu::sigmoid_forward<T>(in.data<T>(), out.data<T>(), in.numel());
  });
  return autograd::record(std::make_shared<SigmoidNode>(out), {x}, out);
}

autograd::Var mul_scalar(const autograd::Var& x, const autograd::Var& s) {
  BRAID_CHECK(s->value.numel() == 1, "mul_scalar: the scalar has shape ", shape_str(s->value.shape()),
              " (x has shape ", shape_str(x->value.shape()), "); expected one element");
  check_same_type("mul_scalar", "x", x->value, "scalar", s->value);
  check_cpu("mul_scalar", x->value);
  Tensor in = x->value.contiguous(), scalar = s->value.contiguous();
  Tensor out = Tensor::empty(in.shape(), in.dtype());
  dispatch_cpu_float("mul_scalar", in.dtype(), [&]<typename T>() {
    kernels::cpu::mul_scalar_forward<T>(in.data<T>(), scalar.data<T>()[0], out.data<T>(), in.numel());
  });
  return autograd::record(std::make_shared<MulScalarNode>(in, scalar), {x, s}, out);
}

}  // namespace braid::ops
