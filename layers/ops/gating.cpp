#include "layers/ops/gating.h"

#include "autograd/tape.h"
#include "kernels/cpu/gating.h"
#include "layers/ops/checks.h"
#include "layers/ops/dispatch.h"

#ifdef BRAID_CUDA
#include "kernels/cuda/gating.h"
#include "runtime/cuda_stream.h"
#include "runtime/device_copy.h"
#endif

namespace braid::ops {

namespace {

// On the CPU the node keeps the output and d_x = d_out * out * (1 - out). On CUDA it keeps the
// input and recomputes the sigmoid in fp32: a bf16 output would leave 1 - out with few correct
// bits where out is near 1.
class SigmoidNode : public autograd::Node {
 public:
  explicit SigmoidNode(Tensor saved) : saved_(std::move(saved)) {}
  const char* name() const override { return "sigmoid"; }
  std::vector<Tensor> backward(const std::vector<Tensor>& grads) override {
#ifdef BRAID_CUDA
    if (saved_.device().is_cuda()) {  // saved_ is the input x
      const Device device = saved_.device();
      cuda_set_device(device.index);
      Tensor d_out = grads[0].to(DType::f32).contiguous();
      Tensor d_x = Tensor::empty(saved_.shape(), DType::f32, device);
      kernels::cuda::sigmoid_backward(saved_.raw_data(), d_out.data<float>(), d_x.data<float>(),
                                      saved_.numel(), saved_.dtype(), compute_stream());
      return {d_x};
    }
#endif
    Tensor d_out = grads[0].to(saved_.dtype()).contiguous();  // saved_ is the output
    Tensor d_x = Tensor::empty(saved_.shape(), saved_.dtype());
    dispatch_cpu_float("sigmoid", saved_.dtype(), [&]<typename T>() {
      kernels::cpu::sigmoid_backward<T>(saved_.data<T>(), d_out.data<T>(), d_x.data<T>(),
                                        saved_.numel());
    });
    return {d_x};
  }

 private:
  Tensor saved_;
};

class MulScalarNode : public autograd::Node {
 public:
  MulScalarNode(Tensor x, Tensor s) : x_(std::move(x)), s_(std::move(s)) {}
  const char* name() const override { return "mul_scalar"; }
  std::vector<Tensor> backward(const std::vector<Tensor>& grads) override {
#ifdef BRAID_CUDA
    if (x_.device().is_cuda()) {  // x in its dtype, the scalar and all gradients in f32
      const Device device = x_.device();
      cuda_set_device(device.index);
      Tensor d_out = grads[0].to(DType::f32).contiguous();
      Tensor d_x = Tensor::empty(x_.shape(), DType::f32, device);
      Tensor d_s = Tensor::empty(s_.shape(), DType::f32, device);
      Tensor workspace = Tensor::empty(
          {int64_t(kernels::cuda::mul_scalar_workspace_floats(x_.numel()))}, DType::f32, device);
      kernels::cuda::mul_scalar_backward(x_.raw_data(), s_.data<float>(), d_out.data<float>(),
                                         d_x.data<float>(), d_s.data<float>(), x_.numel(),
                                         x_.dtype(), workspace.data<float>(), compute_stream());
      return {d_x, d_s};
    }
#endif
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
  check_backend("sigmoid", "x", x->value);
  Tensor in = x->value.contiguous();
#ifdef BRAID_CUDA
  if (in.device().is_cuda()) {
    cuda_set_device(in.device().index);
    Tensor out = Tensor::empty(in.shape(), in.dtype(), in.device());
    kernels::cuda::sigmoid_forward(in.raw_data(), out.raw_data(), in.numel(), in.dtype(),
                                   compute_stream());
    return autograd::record(std::make_shared<SigmoidNode>(in), {x}, out);
  }
#endif
  Tensor out = Tensor::empty(in.shape(), in.dtype());
  dispatch_cpu_float("sigmoid", in.dtype(), [&]<typename T>() {
    kernels::cpu::sigmoid_forward<T>(in.data<T>(), out.data<T>(), in.numel());
  });
  return autograd::record(std::make_shared<SigmoidNode>(out), {x}, out);
}

autograd::Var mul_scalar(const autograd::Var& x, const autograd::Var& s) {
  BRAID_CHECK(s->value.numel() == 1, "mul_scalar: the scalar has shape ", shape_str(s->value.shape()),
              " (x has shape ", shape_str(x->value.shape()), "); expected one element");
  check_backend("mul_scalar", "x", x->value);
  check_param("mul_scalar", "scalar", s->value, x->value);
  Tensor in = x->value.contiguous(), scalar = s->value.contiguous();
#ifdef BRAID_CUDA
  if (in.device().is_cuda()) {
    cuda_set_device(in.device().index);
    Tensor out = Tensor::empty(in.shape(), in.dtype(), in.device());
    kernels::cuda::mul_scalar_forward(in.raw_data(), scalar.data<float>(), out.raw_data(),
                                      in.numel(), in.dtype(), compute_stream());
    return autograd::record(std::make_shared<MulScalarNode>(in, scalar), {x, s}, out);
  }
#endif
  Tensor out = Tensor::empty(in.shape(), in.dtype());
  dispatch_cpu_float("mul_scalar", in.dtype(), [&]<typename T>() {
    kernels::cpu::mul_scalar_forward<T>(in.data<T>(), scalar.data<T>()[0], out.data<T>(), in.numel());
  });
  return autograd::record(std::make_shared<MulScalarNode>(in, scalar), {x, s}, out);
}

}  // namespace braid::ops
