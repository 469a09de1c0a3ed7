#include "layers/ops/ssd.h"

#include <cmath>

#include "autograd/tape.h"
#include "kernels/cpu/ssd.h"
#include "layers/ops/checks.h"
#include "layers/ops/dispatch.h"

#ifdef BRAID_CUDA
#include <cstdint>

#include "kernels/cuda/ssd.h"
#include "runtime/cuda_stream.h"
#include "runtime/device_copy.h"
#endif

namespace braid::ops {

namespace {

using kernels::cpu::SsdProblem;

// The inputs, contiguous, in the op's argument order; initial_state may be undefined.
struct SsdTensors {
  Tensor x, dt_raw, dt_bias, A_log, B, C, D, initial_state;

  template <typename T>
  kernels::cpu::SsdInputs<T> pointers() const {
    return {x.data<T>(), dt_raw.data<T>(), dt_bias.data<T>(), A_log.data<T>(), B.data<T>(),
            C.data<T>(), D.data<T>(), initial_state.defined() ? initial_state.data<T>() : nullptr};
  }
};

#ifdef BRAID_CUDA
kernels::cuda::SsdProblem cuda_problem(const SsdProblem& p) {
  kernels::cuda::SsdProblem q;
  q.batch = p.batch;
  q.seq = p.seq;
  q.heads = p.heads;
  q.head_dim = p.head_dim;
  q.groups = p.groups;
  q.state = p.state;
  q.chunk = p.chunk;
  q.dt_min = p.dt_min;
  q.dt_max = p.dt_max;
  return q;
}

// The CUDA kernels read rows with 16-byte vector loads: a contiguous view that starts off a
// 16-byte boundary is copied.
Tensor aligned(const Tensor& t) {
  if (!t.defined() || reinterpret_cast<uintptr_t>(t.raw_data()) % 16 == 0) return t;
  return t.clone();
}

kernels::cuda::SsdInputs cuda_inputs(const SsdTensors& in) {
  return {in.x.raw_data(),          in.dt_raw.raw_data(),     in.dt_bias.data<float>(),
          in.A_log.data<float>(),   in.B.raw_data(),          in.C.raw_data(),
          in.D.data<float>(),
          in.initial_state.defined() ? in.initial_state.data<float>() : nullptr};
}

Tensor cuda_workspace(size_t floats, Device device) {
  return Tensor::empty({int64_t(floats)}, DType::f32, device);
}
#endif

class SsdNode : public autograd::Node {
 public:
  // forward_workspace: on CUDA, what ssd_forward left for the backward (kernels/cuda/ssd.h).
  SsdNode(SsdTensors inputs, SsdProblem problem, Tensor forward_workspace = Tensor())
      : in_(std::move(inputs)), problem_(problem), forward_workspace_(std::move(forward_workspace)) {}
  const char* name() const override { return "ssd"; }

  std::vector<Tensor> backward(const std::vector<Tensor>& grad_outputs) override {
#ifdef BRAID_CUDA
    if (in_.x.device().is_cuda()) return backward_cuda(grad_outputs);
#endif
    const DType dtype = in_.x.dtype();
    // An output that got no gradient contributes zeros.
    Tensor dy = grad_outputs[0].defined() ? grad_outputs[0].to(dtype).contiguous()
                                          : Tensor::zeros(in_.x.shape(), dtype);
    Tensor d_final = grad_outputs[1].defined() ? grad_outputs[1].to(dtype).contiguous() : Tensor();
    auto like = [&](const Tensor& value) {
      return value.defined() ? Tensor::empty(value.shape(), dtype) : Tensor();
    };
    SsdTensors grads{like(in_.x), like(in_.dt_raw), like(in_.dt_bias), like(in_.A_log),
                     like(in_.B), like(in_.C),      like(in_.D),       like(in_.initial_state)};
    dispatch_cpu_float("ssd", dtype, [&]<typename T>() {
      kernels::cpu::SsdGrads<T> out{
          grads.x.data<T>(), grads.dt_raw.data<T>(), grads.dt_bias.data<T>(),
          grads.A_log.data<T>(), grads.B.data<T>(), grads.C.data<T>(), grads.D.data<T>(),
          grads.initial_state.defined() ? grads.initial_state.data<T>() : nullptr};
      kernels::cpu::ssd_backward<T>(problem_, in_.pointers<T>(), dy.data<T>(),
                                    d_final.defined() ? d_final.data<T>() : nullptr, out);
    });
    return {grads.x, grads.dt_raw, grads.dt_bias, grads.A_log,
            grads.B, grads.C,      grads.D,       grads.initial_state};
  }

 private:
#ifdef BRAID_CUDA
  // Activations f32 or bf16, everything else f32. dy is taken as it comes when it has the
  // activations' dtype (a bf16 dy is exact in the bf16 products), else in f32; the gradients come
  // out in f32 (the kernels compute in fp32; whoever consumes them rounds them if needed).
  std::vector<Tensor> backward_cuda(const std::vector<Tensor>& grad_outputs) const {
    const Device device = in_.x.device();
    cuda_set_device(device.index);
    const kernels::cuda::SsdProblem problem = cuda_problem(problem_);
    const DType dy_dtype =
        grad_outputs[0].defined() && grad_outputs[0].dtype() == in_.x.dtype() ? in_.x.dtype() : DType::f32;
    Tensor dy = grad_outputs[0].defined() ? aligned(grad_outputs[0].to(dy_dtype).contiguous())
                                          : Tensor::zeros(in_.x.shape(), DType::f32, device);
    Tensor d_final = grad_outputs[1].defined()
                         ? aligned(grad_outputs[1].to(DType::f32).contiguous())
                         : Tensor();
    auto like = [&](const Tensor& value) {
      return value.defined() ? Tensor::empty(value.shape(), DType::f32, device) : Tensor();
    };
    SsdTensors grads{like(in_.x), like(in_.dt_raw), like(in_.dt_bias), like(in_.A_log),
                     like(in_.B), like(in_.C),      like(in_.D),       like(in_.initial_state)};
    Tensor workspace = cuda_workspace(
        kernels::cuda::ssd_backward_workspace_floats(problem, in_.x.dtype()), device);
    const kernels::cuda::SsdGrads out{
        grads.x.data<float>(),     grads.dt_raw.data<float>(), grads.dt_bias.data<float>(),
        grads.A_log.data<float>(), grads.B.data<float>(),      grads.C.data<float>(),
        grads.D.data<float>(),
        grads.initial_state.defined() ? grads.initial_state.data<float>() : nullptr};
    kernels::cuda::ssd_backward(problem, cuda_inputs(in_), forward_workspace_.data<float>(),
                                dy.raw_data(), dy.dtype(), d_final.defined() ? d_final.data<float>() : nullptr,
                                out, workspace.data<float>(), in_.x.dtype(), compute_stream());
    return {grads.x, grads.dt_raw, grads.dt_bias, grads.A_log,
            grads.B, grads.C,      grads.D,       grads.initial_state};
  }
#endif

  SsdTensors in_;
  SsdProblem problem_;
  Tensor forward_workspace_;
};

// `tensor` must have shape `expected`, which follows from `source`'s shape.
void check_shape_from(const char* what, const Tensor& tensor, const Shape& expected,
                      const char* source_name, const Tensor& source) {
  BRAID_CHECK(tensor.shape() == expected, "ssd: ", what, " has shape ", shape_str(tensor.shape()),
              ", expected ", shape_str(expected), " to match ", source_name, " of shape ",
              shape_str(source.shape()));
}

}  // namespace

SsdOutputs ssd(const autograd::Var& x, const autograd::Var& dt_raw, const autograd::Var& dt_bias,
               const autograd::Var& A_log, const autograd::Var& B, const autograd::Var& C,
               const autograd::Var& D, const autograd::Var& initial_state,
               const SsdOptions& options) {
  const char* op = "ssd";
  const std::pair<const char*, const autograd::Var*> required[] = {
      {"x", &x}, {"dt_raw", &dt_raw}, {"dt_bias", &dt_bias}, {"A_log", &A_log},
      {"B", &B}, {"C", &C},           {"D", &D}};
  for (const auto& [what, var] : required)
    BRAID_CHECK(*var && (*var)->value.defined(), op, ": ", what, " is missing");
  const Tensor& xv = x->value;
  check_dim(op, "x", xv, 4);
  check_floating(op, "x", xv);
  check_backend(op, "x", xv);
  // Activations share x's dtype and device; parameters and the initial state are f32 next to bf16
  // activations (fp32 master weights, fp32 states), else x's dtype.
  const std::pair<const char*, const autograd::Var*> activations[] = {
      {"dt_raw", &dt_raw}, {"B", &B}, {"C", &C}};
  for (const auto& [what, var] : activations) check_same_type(op, "x", xv, what, (*var)->value);
  const std::pair<const char*, const autograd::Var*> parameters[] = {
      {"dt_bias", &dt_bias}, {"A_log", &A_log}, {"D", &D}};
  for (const auto& [what, var] : parameters) check_param(op, what, (*var)->value, xv);
  if (initial_state) check_param(op, "initial_state", initial_state->value, xv);

  const int64_t batch = xv.size(0), seq = xv.size(1), heads = xv.size(2), head_dim = xv.size(3);
  check_dim(op, "B", B->value, 4);
  const int64_t groups = B->value.size(2), state = B->value.size(3);
  check_shape_from("B", B->value, {batch, seq, groups, state}, "x", xv);
  check_same_shape(op, "B", B->value, "C", C->value);
  BRAID_CHECK(groups > 0 && heads % groups == 0, op, ": the ", heads, " heads of x (shape ",
              shape_str(xv.shape()), ") must split evenly into the ", groups,
              " groups of B (shape ", shape_str(B->value.shape()), ")");
  check_shape_from("dt_raw", dt_raw->value, {batch, seq, heads}, "x", xv);
  check_shape_from("dt_bias", dt_bias->value, {heads}, "x", xv);
  check_shape_from("A_log", A_log->value, {heads}, "x", xv);
  check_shape_from("D", D->value, {heads}, "x", xv);
  if (initial_state) {
    const Tensor& initial = initial_state->value;
    BRAID_CHECK(initial.shape() == Shape({batch, heads, head_dim, state}), op,
                ": initial_state has shape ", shape_str(initial.shape()), ", expected ",
                shape_str({batch, heads, head_dim, state}), " to match x of shape ",
                shape_str(xv.shape()), " and B of shape ", shape_str(B->value.shape()));
  }
  BRAID_CHECK(options.chunk > 0, op, ": chunk must be positive, got ", options.chunk);
  BRAID_CHECK(options.dt_min >= 0 && options.dt_min <= options.dt_max, op,
              ": the dt clamp needs 0 <= dt_min <= dt_max, got [", options.dt_min, ", ",
              options.dt_max, "]");

  SsdTensors in{xv.contiguous(),         dt_raw->value.contiguous(), dt_bias->value.contiguous(),
                A_log->value.contiguous(), B->value.contiguous(),  C->value.contiguous(),
                D->value.contiguous(),
                initial_state ? initial_state->value.contiguous() : Tensor()};
  const SsdProblem problem{batch, seq, heads, head_dim, groups, state,
                           options.chunk, options.dt_min, options.dt_max};
#ifdef BRAID_CUDA
  if (xv.device().is_cuda()) {
    cuda_set_device(xv.device().index);
    const kernels::cuda::SsdProblem cp = cuda_problem(problem);
    kernels::cuda::ssd_check_problem(cp);  // e.g. a chunk that is not a multiple of 16
    for (Tensor* t : {&in.x, &in.B, &in.C, &in.initial_state}) *t = aligned(*t);
    Tensor y = Tensor::empty(xv.shape(), xv.dtype(), xv.device());
    Tensor final_state = Tensor::empty({batch, heads, head_dim, state}, DType::f32, xv.device());
    Tensor workspace = cuda_workspace(kernels::cuda::ssd_forward_workspace_floats(cp), xv.device());
    kernels::cuda::ssd_forward(cp, cuda_inputs(in), y.raw_data(), final_state.data<float>(),
                               workspace.data<float>(), xv.dtype(), compute_stream());
    std::vector<autograd::Var> outputs =
        autograd::record(std::make_shared<SsdNode>(std::move(in), problem, std::move(workspace)),
                         {x, dt_raw, dt_bias, A_log, B, C, D, initial_state}, {y, final_state});
    return {outputs[0], outputs[1]};
  }
#endif
  Tensor y = Tensor::empty(xv.shape(), xv.dtype());
  Tensor final_state = Tensor::empty({batch, heads, head_dim, state}, xv.dtype());
  dispatch_cpu_float(op, xv.dtype(), [&]<typename T>() {
    kernels::cpu::ssd_forward<T>(problem, in.pointers<T>(), y.data<T>(), final_state.data<T>());
  });
  std::vector<autograd::Var> outputs =
      autograd::record(std::make_shared<SsdNode>(std::move(in), problem),
                       {x, dt_raw, dt_bias, A_log, B, C, D, initial_state}, {y, final_state});
  return {outputs[0], outputs[1]};
}

}  // namespace braid::ops
