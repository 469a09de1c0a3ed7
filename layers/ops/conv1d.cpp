#include "layers/ops/conv1d.h"

#include "autograd/tape.h"
#include "kernels/cpu/conv1d.h"
#include "layers/ops/checks.h"
#include "layers/ops/dispatch.h"

#ifdef BRAID_CUDA
#include "kernels/cuda/conv1d.h"
#include "runtime/cuda_stream.h"
#include "runtime/device_copy.h"
#endif

namespace braid::ops {

namespace {

// T*-typed view of an optional tensor: null when it is undefined.
template <typename T>
T* data_or_null(const Tensor& tensor) {
  return tensor.defined() ? tensor.data<T>() : nullptr;
}

#ifdef BRAID_CUDA
// The same, untyped, for the CUDA kernels (they take activations with their dtype beside).
void* raw_or_null(const Tensor& tensor) { return tensor.defined() ? tensor.raw_data() : nullptr; }
#endif

class Conv1dNode : public autograd::Node {
 public:
  // initial_state is undefined when the conv started from zeros.
  Conv1dNode(Tensor x, Tensor weight, Tensor bias, Tensor initial_state, bool silu)
      : x_(std::move(x)), weight_(std::move(weight)), bias_(std::move(bias)),
        initial_state_(std::move(initial_state)), silu_(silu) {}
  const char* name() const override { return "conv1d"; }

  std::vector<Tensor> backward(const std::vector<Tensor>& grad_outputs) override {
#ifdef BRAID_CUDA
    if (x_.device().is_cuda()) return cuda_backward(grad_outputs);
#endif
    const DType dtype = x_.dtype();
    Tensor d_out = grad_outputs[0].defined() ? grad_outputs[0].to(dtype).contiguous()
                                             : Tensor::zeros(x_.shape(), dtype);
    Tensor d_final_state =
        grad_outputs[1].defined() ? grad_outputs[1].to(dtype).contiguous() : Tensor();
    Tensor d_x = Tensor::empty(x_.shape(), dtype);
    Tensor d_weight = Tensor::empty(weight_.shape(), dtype);
    Tensor d_bias = Tensor::empty(bias_.shape(), dtype);
    Tensor d_initial_state =
        initial_state_.defined() ? Tensor::empty(initial_state_.shape(), dtype) : Tensor();
    dispatch_cpu_float("conv1d", dtype, [&]<typename T>() {
      kernels::cpu::causal_conv1d_backward<T>(
          x_.data<T>(), weight_.data<T>(), bias_.data<T>(), data_or_null<T>(initial_state_),
          d_out.data<T>(), data_or_null<T>(d_final_state), d_x.data<T>(), d_weight.data<T>(),
          d_bias.data<T>(), data_or_null<T>(d_initial_state), x_.size(0), x_.size(1), x_.size(2),
          weight_.size(1), silu_);
    });
    std::vector<Tensor> grads = {d_x, d_weight, d_bias};
    if (initial_state_.defined()) grads.push_back(d_initial_state);
    return grads;
  }

 private:
#ifdef BRAID_CUDA
  // The same gradients on x's CUDA device (DESIGN.md "Precision"): those of the activations (x, the
  // initial state) in x's dtype, those of the fp32 parameters in f32.
  std::vector<Tensor> cuda_backward(const std::vector<Tensor>& grad_outputs) {
    const Device device = x_.device();
    const DType dtype = x_.dtype();
    const int64_t batch = x_.size(0), length = x_.size(1), channels = x_.size(2);
    const int64_t width = weight_.size(1);
    cuda_set_device(device.index);
    Tensor d_out = grad_outputs[0].defined() ? grad_outputs[0].to(dtype).contiguous()
                                             : Tensor::zeros(x_.shape(), dtype, device);
    Tensor d_final_state =
        grad_outputs[1].defined() ? grad_outputs[1].to(dtype).contiguous() : Tensor();
    Tensor d_x = Tensor::empty(x_.shape(), dtype, device);
    Tensor d_weight = Tensor::empty(weight_.shape(), DType::f32, device);
    Tensor d_bias = Tensor::empty(bias_.shape(), DType::f32, device);
    Tensor d_initial_state = initial_state_.defined()
                                 ? Tensor::empty(initial_state_.shape(), dtype, device)
                                 : Tensor();
    Tensor workspace = Tensor::empty(
        {int64_t(kernels::cuda::causal_conv1d_backward_workspace_floats(batch, length, channels,
                                                                         width))},
        DType::f32, device);
    kernels::cuda::causal_conv1d_backward(
        x_.raw_data(), weight_.data<float>(), bias_.data<float>(), raw_or_null(initial_state_),
        d_out.raw_data(), raw_or_null(d_final_state), d_x.raw_data(), d_weight.data<float>(),
        d_bias.data<float>(), raw_or_null(d_initial_state), workspace.data<float>(), batch,
        length, channels, width, silu_, dtype, compute_stream());
    std::vector<Tensor> grads = {d_x, d_weight, d_bias};
    if (initial_state_.defined()) grads.push_back(d_initial_state);
    return grads;
  }
#endif

  Tensor x_, weight_, bias_, initial_state_;
  bool silu_;
};

}  // namespace

Conv1dOutput conv1d(const autograd::Var& x, const autograd::Var& weight, const autograd::Var& bias,
                    const autograd::Var& initial_state, bool silu) {
  const char* op = "conv1d";
  check_dim(op, "x (B, T, C)", x->value, 3);
  check_floating(op, "x", x->value);
  check_backend(op, "x", x->value);
  const int64_t batch = x->value.size(0), channels = x->value.size(2);
  BRAID_CHECK(weight->value.dim() == 2 && weight->value.size(0) == channels &&
                  weight->value.size(1) >= 1,
              op, ": weight has shape ", shape_str(weight->value.shape()), " but x has shape ",
              shape_str(x->value.shape()), "; weight must be (C, W) with C = ", channels,
              " and W >= 1");
  const int64_t width = weight->value.size(1);
  check_shape(op, "bias", bias->value, {channels});
  check_param(op, "weight", weight->value, x->value);
  check_param(op, "bias", bias->value, x->value);
  if (initial_state) {
    const Shape expected = {batch, channels, width - 1};
    BRAID_CHECK(initial_state->value.shape() == expected, op, ": initial_state has shape ",
                shape_str(initial_state->value.shape()), " but x has shape ",
                shape_str(x->value.shape()), " and weight ", shape_str(weight->value.shape()),
                "; expected (B, C, W-1) = ", shape_str(expected));
    check_same_type(op, "x", x->value, "initial_state", initial_state->value);
  }

  Tensor xc = x->value.contiguous(), w = weight->value.contiguous(), b = bias->value.contiguous();
  Tensor init = initial_state ? initial_state->value.contiguous() : Tensor();
  Tensor out = Tensor::empty(xc.shape(), xc.dtype(), xc.device());
  Tensor final_state = Tensor::empty({batch, channels, width - 1}, xc.dtype(), xc.device());
  if (xc.device().is_cuda()) {
    // (Reached only in CUDA builds: check_backend refuses CUDA tensors elsewhere.)
#ifdef BRAID_CUDA
    cuda_set_device(xc.device().index);
    kernels::cuda::causal_conv1d_forward(
        xc.raw_data(), w.data<float>(), b.data<float>(), raw_or_null(init),
        out.raw_data(), final_state.raw_data(), batch, xc.size(1), channels, width, silu,
        xc.dtype(), compute_stream());
#endif
  } else {
    dispatch_cpu_float(op, xc.dtype(), [&]<typename T>() {
      kernels::cpu::causal_conv1d_forward<T>(xc.data<T>(), w.data<T>(), b.data<T>(),
                                             data_or_null<T>(init), out.data<T>(),
                                             final_state.data<T>(), batch, xc.size(1), channels,
                                             width, silu);
    });
  }
  std::vector<autograd::Var> inputs = {x, weight, bias};
  if (initial_state) inputs.push_back(initial_state);
  std::vector<autograd::Var> outputs = autograd::record(
      std::make_shared<Conv1dNode>(xc, w, b, init, silu), inputs, {out, final_state});
  return {outputs[0], outputs[1]};
}

}  // namespace braid::ops
