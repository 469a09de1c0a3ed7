#include "layers/ffn.h"

#include "autograd/tape.h"
#include "layers/basic.h"
#include "layers/ops/elementwise.h"
#include "layers/ops/layout.h"
#include "layers/ops/matmul.h"
#include "layers/ops/moe.h"
#include "layers/ops/swiglu.h"

namespace braid {

SwiGLU::SwiGLU(int64_t d_model, int64_t d_ffn, const TensorOptions& options, double init_std,
               double output_std) {
  gate_proj_ = add_module("gate_proj", std::make_unique<Linear>(d_model, d_ffn, options, init_std));
  up_proj_ = add_module("up_proj", std::make_unique<Linear>(d_model, d_ffn, options, init_std));
  down_proj_ = add_module("down_proj", std::make_unique<Linear>(d_ffn, d_model, options, output_std));
}

autograd::Var SwiGLU::forward(const autograd::Var& x) const {
  return down_proj_->forward(ops::swiglu(gate_proj_->forward(x), up_proj_->forward(x)));
}

autograd::Var SwiGLU::forward_inference(const autograd::Var& x, const InferenceStep& step) const {
  const autograd::Var hidden =
      ops::swiglu_of_constant_weights(x, step.weight(gate_proj_->weight()), step.weight(up_proj_->weight()));
  return project(*down_proj_, hidden, &step);
}

MoE::MoE(int64_t d_model, const FfnConfig& config, const TensorOptions& options, double init_std,
         double output_std)
    : config_(config) {
  const int64_t expert_width = config.d_ffn / 2;
  shared_ = add_module("shared", std::make_unique<SwiGLU>(d_model, expert_width, options, init_std, output_std));
  router_ = add_module("router", std::make_unique<Linear>(d_model, config.n_experts, options, init_std));
  for (int64_t e = 0; e < config.n_experts; ++e)
    experts_.push_back(add_module("experts." + std::to_string(e),
                                  std::make_unique<SwiGLU>(d_model, expert_width, options, init_std, output_std)));
  routing_bias_ = Tensor::zeros({config.n_experts}, DType::f32, options.device);
  load_ = Tensor::zeros({config.n_experts}, DType::i64);
}

autograd::Var MoE::forward(const autograd::Var& x) const { return run(x, nullptr); }

autograd::Var MoE::forward_inference(const autograd::Var& x, const InferenceStep& step) const {
  return run(x, &step);
}

autograd::Var MoE::run(const autograd::Var& x, const InferenceStep* step) const {
  auto expert = [&](const SwiGLU& ffn, const autograd::Var& in) {
    return step ? ffn.forward_inference(in, *step) : ffn.forward(in);
  };
  const Shape shape = x->value.shape();
  const int64_t d = shape.back();
  autograd::Var tokens = ops::reshape(x, {-1, d});
  autograd::Var logits = project(*router_, tokens, step);
  autograd::Var routed;
  if (step && step->decoding()) {
    // A decode step (one new token per sequence; the step the session records as a CUDA graph):
    // every expert runs on all rows and is weighted by dense gates, zero off the router's selection,
    // because the routed path below reads the expert offsets on the host, which a graph cannot
    // record. Its cost: every expert's weights are read once per step (the routed path's worst
    // case, reached once the batch's tokens select every expert; at batch 1 it reads only k of
    // them), and E/k times the arithmetic, which stays hidden behind the weight reads while the
    // batch is far below the GEMM's memory-bound limit (hundreds of rows). Prefill chunks and
    // training take the routed path.
    BRAID_CHECK(!autograd::grad_enabled(), "MoE: a decode step runs without gradients (NoGradScope)");
    const Tensor gates = ops::moe_dense_gates(logits->value, routing_bias_, config_.top_k);
    std::vector<autograd::Var> outputs;
    for (const SwiGLU* ffn : experts_) outputs.push_back(expert(*ffn, tokens));
    routed = autograd::leaf(ops::moe_dense_combine(ops::concat(outputs, 0)->value, gates));
  } else {
    ops::RouteResult route = ops::moe_route(logits, routing_bias_, config_.top_k);
    if (autograd::grad_enabled()) {  // training forwards only (a recompute replay counts once)
      const int64_t* loads = route.load.data<int64_t>();
      int64_t* total = load_.data<int64_t>();
      for (int64_t e = 0; e < config_.n_experts; ++e) total[e] += loads[e];
    }
    // Each expert runs on its contiguous slice of the expert-major token order.
    autograd::Var gathered = ops::moe_gather(tokens, route);
    const int64_t* offsets = route.offsets.data<int64_t>();
    std::vector<autograd::Var> outputs;
    for (int64_t e = 0; e < config_.n_experts; ++e) {
      const int64_t count = offsets[e + 1] - offsets[e];
      if (count > 0) outputs.push_back(expert(*experts_[size_t(e)], ops::narrow(gathered, 0, offsets[e], count)));
    }
    routed = ops::moe_combine(ops::concat(outputs, 0), route.weights, route);
  }
  return ops::reshape(ops::add(expert(*shared_, tokens), routed), shape);
}

void MoE::update_routing_bias() {
  ops::moe_bias_update(routing_bias_, load_, config_.bias_update_rate);
  load_.fill_(0);
}

}  // namespace braid
