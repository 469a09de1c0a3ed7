#include "layers/ops/ssd.h"

#include <cmath>

#include "autograd/tape.h"
#include "kernels/cpu/ssd.h"
#include "layers/ops/checks.h"
#include "layers/ops/dispatch.h"

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

class SsdNode : public autograd::Node {
 public:
  SsdNode(SsdTensors inputs, SsdProblem problem) : in_(std::move(inputs)), problem_(problem) {}
  const char* name() const override { return "ssd"; }

  std::vector<Tensor> backward(const std::vector<Tensor>& grad_outputs) override {
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
  SsdTensors in_;
  SsdProblem problem_;
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
  check_cpu(op, xv);
  for (const auto& [what, var] : required) check_same_type(op, "x", xv, what, (*var)->value);
  if (initial_state) check_same_type(op, "x", xv, "initial_state", initial_state->value);

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
