#include "layers/ops/elementwise.h"

#include "autograd/tape.h"
#include "kernels/cpu/elementwise.h"
#include "layers/ops/checks.h"
#include "layers/ops/dispatch.h"

#ifdef BRAID_CUDA
#include "kernels/cuda/elementwise.h"
#include "runtime/cuda_stream.h"
#include "runtime/device_copy.h"
#endif

namespace braid::ops {

namespace {

namespace cpu = kernels::cpu;

// The gradient of an output, in `dtype` and contiguous.
Tensor incoming(const Tensor& grad, DType dtype) { return grad.to(dtype).contiguous(); }

// The same for backwards whose CUDA kernels take any float dtype: there the gradient keeps the dtype
// it came in (an fp32 one is not rounded just to be read); the CPU kernels take `cpu_dtype`.
Tensor incoming_any(const Tensor& grad, DType cpu_dtype) {
  return grad.device().is_cuda() ? grad.contiguous() : incoming(grad, cpu_dtype);
}

#ifdef BRAID_CUDA
namespace gpu = kernels::cuda;

// A fresh tensor on `like`'s device (made current for the launches that follow).
Tensor empty_on(const Tensor& like, const Shape& shape, DType dtype) {
  cuda_set_device(like.device().index);
  return Tensor::empty(shape, dtype, like.device());
}

// out = a (op) b on the GPU, each in its own dtype.
Tensor cuda_binary(gpu::BinaryOp op, const Tensor& a, const Tensor& b, DType out_dtype) {
  Tensor out = empty_on(a, a.shape(), out_dtype);
  gpu::binary(op, a.raw_data(), a.dtype(), b.raw_data(), b.dtype(), out.raw_data(), out_dtype,
              out.numel(), compute_stream());
  return out;
}

Tensor cuda_scale(const Tensor& a, double factor, DType out_dtype) {
  Tensor out = empty_on(a, a.shape(), out_dtype);
  gpu::scale(a.raw_data(), a.dtype(), float(factor), out.raw_data(), out_dtype, out.numel(),
             compute_stream());
  return out;
}
#endif

// add (sign +1) and sub (sign -1): d_a = d_out, d_b = sign * d_out.
class AddNode : public autograd::Node {
 public:
  AddNode(DType dtype, double sign) : dtype_(dtype), sign_(sign) {}
  const char* name() const override { return sign_ > 0 ? "add" : "sub"; }

  std::vector<Tensor> backward(const std::vector<Tensor>& grad_outputs) override {
    Tensor d_out = incoming_any(grad_outputs[0], autograd::grad_dtype(dtype_));
    if (sign_ > 0) return {d_out, d_out};
#ifdef BRAID_CUDA
    if (d_out.device().is_cuda()) return {d_out, cuda_scale(d_out, -1.0, d_out.dtype())};
#endif
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
    const DType grad_dtype = autograd::grad_dtype(a_.dtype());
    Tensor d_out = incoming_any(grad_outputs[0], grad_dtype);
#ifdef BRAID_CUDA
    if (a_.device().is_cuda())  // products in fp32
      return {cuda_binary(gpu::BinaryOp::mul, d_out, b_, grad_dtype),
              cuda_binary(gpu::BinaryOp::mul, d_out, a_, grad_dtype)};
#endif
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
    Tensor d_out = incoming_any(grad_outputs[0], autograd::grad_dtype(dtype_));
#ifdef BRAID_CUDA
    if (d_out.device().is_cuda()) return {cuda_scale(d_out, factor_, d_out.dtype())};
#endif
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
#ifdef BRAID_CUDA
    if (grad_outputs[0].device().is_cuda()) {
      // Broadcast on the device: no host round trip for the seed.
      const Tensor seed = grad_outputs[0].to(DType::f32).contiguous();
      Tensor d_a = empty_on(seed, shape_, DType::f32);
      gpu::broadcast_scalar(seed.data<float>(), float(factor_), d_a.raw_data(), DType::f32,
                            d_a.numel(), compute_stream());
      return {d_a};
    }
#endif
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
    const int64_t channels = v_.numel(), rows = channels > 0 ? x_.numel() / channels : 0;
#ifdef BRAID_CUDA
    if (x_.device().is_cuda()) {  // the kernel reads and writes gradients in f32
      const Tensor d_out = incoming(grad_outputs[0], DType::f32);
      Tensor d_x = empty_on(x_, x_.shape(), DType::f32), d_v = empty_on(x_, v_.shape(), DType::f32);
      Tensor workspace = empty_on(
          x_, {std::max<int64_t>(1, gpu::mul_broadcast_last_workspace_floats(rows, channels))},
          DType::f32);
      gpu::mul_broadcast_last_backward(x_.raw_data(), v_.data<float>(), d_out.data<float>(),
                                       d_x.data<float>(), d_v.data<float>(), rows, channels,
                                       x_.dtype(), workspace.data<float>(), compute_stream());
      return {d_x, d_v};
    }
#endif
    const Tensor d_out = incoming(grad_outputs[0], autograd::grad_dtype(x_.dtype()));
    Tensor d_x = Tensor::empty(x_.shape(), x_.dtype()), d_v = Tensor::empty(v_.shape(), v_.dtype());
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
  check_backend(op, "a", a->value);
  return {a->value.contiguous(), b->value.contiguous()};
}

// a + sign * b.
autograd::Var add_signed(const char* op, const autograd::Var& a, const autograd::Var& b,
                         double sign) {
  auto [a_value, b_value] = binary_operands(op, a, b);
#ifdef BRAID_CUDA
  if (a_value.device().is_cuda()) {
    Tensor out = cuda_binary(sign > 0 ? gpu::BinaryOp::add : gpu::BinaryOp::sub, a_value, b_value,
                             a_value.dtype());
    return autograd::record(std::make_shared<AddNode>(a_value.dtype(), sign), {a, b}, out);
  }
#endif
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
  check_backend(op, "a", a->value);
  Tensor a_value = a->value.contiguous();
#ifdef BRAID_CUDA
  if (a_value.device().is_cuda()) {
    Tensor out = empty_on(a_value, {1}, a_value.dtype());
    Tensor workspace = empty_on(a_value, {gpu::sum_workspace_floats(a_value.numel())}, DType::f32);
    gpu::sum(a_value.raw_data(), a_value.dtype(), float(factor), out.raw_data(), out.dtype(),
             a_value.numel(), workspace.data<float>(), compute_stream());
    return autograd::record(
        std::make_shared<SumNode>(a_value.shape(), a_value.dtype(), factor, op), {a}, out);
  }
#endif
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
#ifdef BRAID_CUDA
  if (a_value.device().is_cuda()) {
    Tensor out = cuda_binary(gpu::BinaryOp::mul, a_value, b_value, a_value.dtype());
    return autograd::record(std::make_shared<MulNode>(a_value, b_value), {a, b}, out);
  }
#endif
  Tensor out = Tensor::empty(a_value.shape(), a_value.dtype());
  dispatch_cpu_float("mul", a_value.dtype(), [&]<typename T>() {
    cpu::mul<T>(a_value.data<T>(), b_value.data<T>(), out.data<T>(), out.numel());
  });
  return autograd::record(std::make_shared<MulNode>(a_value, b_value), {a, b}, out);
}

autograd::Var scale(const autograd::Var& a, double factor) {
  check_backend("scale", "a", a->value);
  Tensor a_value = a->value.contiguous();
#ifdef BRAID_CUDA
  if (a_value.device().is_cuda())
    return autograd::record(std::make_shared<ScaleNode>(a_value.dtype(), factor), {a},
                            cuda_scale(a_value, factor, a_value.dtype()));
#endif
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
  check_backend("mul_broadcast_last", "x", x->value);
  check_param("mul_broadcast_last", "v", v->value, x->value);
  Tensor x_value = x->value.contiguous(), v_value = v->value.contiguous();
  const int64_t channels = v_value.numel(), rows = channels > 0 ? x_value.numel() / channels : 0;
#ifdef BRAID_CUDA
  if (x_value.device().is_cuda()) {
    Tensor out = empty_on(x_value, x_value.shape(), x_value.dtype());
    gpu::mul_broadcast_last_forward(x_value.raw_data(), v_value.data<float>(), out.raw_data(), rows,
                                    channels, x_value.dtype(), compute_stream());
    return autograd::record(std::make_shared<MulBroadcastLastNode>(x_value, v_value), {x, v}, out);
  }
#endif
  Tensor out = Tensor::empty(x_value.shape(), x_value.dtype());
  dispatch_cpu_float("mul_broadcast_last", x_value.dtype(), [&]<typename T>() {
    cpu::mul_broadcast_last_forward<T>(x_value.data<T>(), v_value.data<T>(), out.data<T>(), rows,
                                       channels);
  });
  return autograd::record(std::make_shared<MulBroadcastLastNode>(x_value, v_value), {x, v}, out);
}

}  // namespace braid::ops
