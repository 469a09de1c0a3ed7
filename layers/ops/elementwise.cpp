#include "layers/ops/elementwise.h"

#include "autograd/tape.h"
#include "kernels/cpu/elementwise.h"
#include "layers/ops/checks.h"
#include "layers/ops/dispatch.h"

namespace braid::ops {

namespace {

namespace cpu = kernels::cpu;

// The gradient of an output, in `dtype` and contiguous.
Tensor incoming(const Tensor& grad, DType dtype) { return grad.to(dtype).contiguous(); }

// add (sign +1) and sub (sign -1): d_a = d_out, d_b = sign * d_out.
class AddNode : public autograd::Node {
 public:
  AddNode(DType dtype, double sign) : dtype_(dtype), sign_(sign) {}
  const char* name() const override { return sign_ > 0 ? "add" : "sub"; }

  std::vector<Tensor> backward(const std::vector<Tensor>& grad_outputs) override {
    Tensor d_out = incoming(grad_outputs[0], dtype_);
    if (sign_ > 0) return {d_out, d_out};
    Tensor d_b = Tensor::empty(d_out.shape(), dtype_);
    dispatch_cpu_float("sub", dtype_, [&]<typename T>() {
      cpu::scale<T>(d_out.data<T>(), T(-1), d_b.data<T>(), d_out.numel());
    });
    return {d_out, d_b};
  }

 private:
  DType dtype_;
  double sign_;
};

// d_a = d_out * b, d_b = d_out * a.
class MulNode : public autograd::Node {
 public:
  MulNode(Tensor a, Tensor b) : a_(std::move(a)), b_(std::move(b)) {}
  const char* name() const override { return "mul"; }

  std::vector<Tensor> backward(const std::vector<Tensor>& grad_outputs) override {
    Tensor d_out = incoming(grad_outputs[0], a_.dtype());
    Tensor d_a = Tensor::empty(a_.shape(), a_.dtype()), d_b = Tensor::empty(b_.shape(), b_.dtype());
    dispatch_cpu_float("mul", a_.dtype(), [&]<typename T>() {
      cpu::mul<T>(d_out.data<T>(), b_.data<T>(), d_a.data<T>(), a_.numel());
      cpu::mul<T>(d_out.data<T>(), a_.data<T>(), d_b.data<T>(), a_.numel());
    });
    return {d_a, d_b};
  }

 private:
  Tensor a_, b_;
};

// d_a = factor * d_out.
class ScaleNode : public autograd::Node {
 public:
  ScaleNode(DType dtype, double factor) : dtype_(dtype), factor_(factor) {}
  const char* name() const override { return "scale"; }

  std::vector<Tensor> backward(const std::vector<Tensor>& grad_outputs) override {
    Tensor d_out = incoming(grad_outputs[0], dtype_);
    Tensor d_a = Tensor::empty(d_out.shape(), dtype_);
    dispatch_cpu_float("scale", dtype_, [&]<typename T>() {
      cpu::scale<T>(d_out.data<T>(), T(factor_), d_a.data<T>(), d_out.numel());
    });
    return {d_a};
  }

 private:
  DType dtype_;
  double factor_;
};

// sum (factor 1) and mean (factor 1/n): every element's gradient is factor * d_out.
class SumNode : public autograd::Node {
 public:
  SumNode(Shape shape, DType dtype, double factor, const char* name)
      : shape_(std::move(shape)), dtype_(dtype), factor_(factor), name_(name) {}
  const char* name() const override { return name_; }

  std::vector<Tensor> backward(const std::vector<Tensor>& grad_outputs) override {
    return {Tensor::full(shape_, grad_outputs[0].item() * factor_, dtype_)};
  }

 private:
  Shape shape_;
  DType dtype_;
  double factor_;
  const char* name_;
};

class MulBroadcastLastNode : public autograd::Node {
 public:
  MulBroadcastLastNode(Tensor x, Tensor v) : x_(std::move(x)), v_(std::move(v)) {}
  const char* name() const override { return "mul_broadcast_last"; }

  std::vector<Tensor> backward(const std::vector<Tensor>& grad_outputs) override {
    Tensor d_out = incoming(grad_outputs[0], x_.dtype());
    Tensor d_x = Tensor::empty(x_.shape(), x_.dtype()), d_v = Tensor::empty(v_.shape(), v_.dtype());
    const int64_t channels = v_.numel(), rows = channels > 0 ? x_.numel() / channels : 0;
    dispatch_cpu_float("mul_broadcast_last", x_.dtype(), [&]<typename T>() {
      cpu::mul_broadcast_last_backward<T>(x_.data<T>(), v_.data<T>(), d_out.data<T>(),
                                          d_x.data<T>(), d_v.data<T>(), rows, channels);
    });
    return {d_x, d_v};
  }

 private:
  Tensor x_, v_;
};

// Checks shared by the two-operand ops; returns both operands contiguous.
std::pair<Tensor, Tensor> binary_operands(const char* op, const autograd::Var& a,
                                          const autograd::Var& b) {
  check_same_shape(op, "a", a->value, "b", b->value);
  check_same_type(op, "a", a->value, "b", b->value);
  check_cpu(op, a->value);
  return {a->value.contiguous(), b->value.contiguous()};
}

// a + sign * b.
autograd::Var add_signed(const char* op, const autograd::Var& a, const autograd::Var& b,
                         double sign) {
  auto [a_value, b_value] = binary_operands(op, a, b);
  Tensor out = Tensor::empty(a_value.shape(), a_value.dtype());
  dispatch_cpu_float(op, a_value.dtype(), [&]<typename T>() {
    if (sign > 0)
      cpu::add<T>(a_value.data<T>(), b_value.data<T>(), out.data<T>(), out.numel());
    else
      cpu::sub<T>(a_value.data<T>(), b_value.data<T>(), out.data<T>(), out.numel());
  });
  return autograd::record(std::make_shared<AddNode>(a_value.dtype(), sign), {a, b}, out);
}

// Sum of every element times `factor`, as shape [1].
autograd::Var reduce(const char* op, const autograd::Var& a, double factor) {
  check_cpu(op, a->value);
  Tensor a_value = a->value.contiguous();
  Tensor out = Tensor::empty({1}, a_value.dtype());
  dispatch_cpu_float(op, a_value.dtype(), [&]<typename T>() {
    out.data<T>()[0] = T(cpu::sum<T>(a_value.data<T>(), a_value.numel()) * factor);
  });
  return autograd::record(std::make_shared<SumNode>(a_value.shape(), a_value.dtype(), factor, op),
                          {a}, out);
}

}  // namespace

autograd::Var add(const autograd::Var& a, const autograd::Var& b) {
  return add_signed("add", a, b, 1);
}

autograd::Var sub(const autograd::Var& a, const autograd::Var& b) {
  return add_signed("sub", a, b, -1);
}

autograd::Var mul(const autograd::Var& a, const autograd::Var& b) {
  auto [a_value, b_value] = binary_operands("mul", a, b);
  Tensor out = Tensor::empty(a_value.shape(), a_value.dtype());
  dispatch_cpu_float("mul", a_value.dtype(), [&]<typename T>() {
    cpu::mul<T>(a_value.data<T>(), b_value.data<T>(), out.data<T>(), out.numel());
  });
  return autograd::record(std::make_shared<MulNode>(a_value, b_value), {a, b}, out);
}

autograd::Var scale(const autograd::Var& a, double factor) {
  check_cpu("scale", a->value);
  Tensor a_value = a->value.contiguous();
  Tensor out = Tensor::empty(a_value.shape(), a_value.dtype());
  dispatch_cpu_float("scale", a_value.dtype(), [&]<typename T>() {
    cpu::scale<T>(a_value.data<T>(), T(factor), out.data<T>(), out.numel());
  });
  return autograd::record(std::make_shared<ScaleNode>(a_value.dtype(), factor), {a}, out);
}

autograd::Var sum(const autograd::Var& a) { return reduce("sum", a, 1.0); }

autograd::Var mean(const autograd::Var& a) {
  BRAID_CHECK(a->value.numel() > 0, "mean: a has shape ", shape_str(a->value.shape()),
              ": the mean of no elements is undefined");
  return reduce("mean", a, 1.0 / double(a->value.numel()));
}

autograd::Var mul_broadcast_last(const autograd::Var& x, const autograd::Var& v) {
  BRAID_CHECK(x->value.dim() >= 1 && v->value.dim() == 1 && v->value.size(0) == x->value.size(-1),
              "mul_broadcast_last: x has shape ", shape_str(x->value.shape()), " but v has shape ",
              shape_str(v->value.shape()), ": v must be one vector as long as x's last dimension");
  check_same_type("mul_broadcast_last", "x", x->value, "v", v->value);
  check_cpu("mul_broadcast_last", x->value);
  Tensor x_value = x->value.contiguous(), v_value = v->value.contiguous();
  const int64_t channels = v_value.numel(), rows = channels > 0 ? x_value.numel() / channels : 0;
  Tensor out = Tensor::empty(x_value.shape(), x_value.dtype());
  dispatch_cpu_float("mul_broadcast_last", x_value.dtype(), [&]<typename T>() {
    cpu::mul_broadcast_last_forward<T>(x_value.data<T>(), v_value.data<T>(), out.data<T>(), rows,
                                       channels);
  });
  return autograd::record(std::make_shared<MulBroadcastLastNode>(x_value, v_value), {x, v}, out);
}

}  // namespace braid::ops
