// Feed-forward networks (MODEL.md sections 1 and 5): the dense SwiGLU FFN, and the MoE FFN of one
// shared expert plus top-k of E routed experts with sigmoid scores and auxiliary-loss-free balancing.
#pragma once

#include <vector>

#include "layers/mixer.h"
#include "layers/model_config.h"

namespace braid {

class Linear;

class SwiGLU : public FeedForward {
 public:
  SwiGLU(int64_t d_model, int64_t d_ffn, const TensorOptions& options, double init_std, double output_std);
  autograd::Var forward(const autograd::Var& x) const override;  // down(SiLU(gate x) ⊙ up x)
  autograd::Var forward_inference(const autograd::Var& x, const InferenceStep& step) const override;

 private:
  Linear *gate_proj_, *up_proj_, *down_proj_;
};

class MoE : public FeedForward {
 public:
  MoE(int64_t d_model, const FfnConfig& config, const TensorOptions& options, double init_std,
      double output_std);
  autograd::Var forward(const autograd::Var& x) const override;
  // Prefill chunks route like training; decode steps weight every expert by dense gates, reading
  // nothing on the host, so the session can record them as a CUDA graph.
  autograd::Var forward_inference(const autograd::Var& x, const InferenceStep& step) const override;

  // bias_e += rate * sign(mean load - load_e) from the loads routed since the last call; then the
  // count restarts. Called once per optimizer step.
  void update_routing_bias();
  const Tensor& routing_bias() const { return routing_bias_; }
  const Tensor& load_since_update() const { return load_; }

 private:
  autograd::Var run(const autograd::Var& x, const InferenceStep* step) const;  // step: null in training

  FfnConfig config_;
  SwiGLU* shared_;
  Linear* router_;
  std::vector<SwiGLU*> experts_;
  Tensor routing_bias_;  // (E) f32, a buffer: selection only, no gradient
  mutable Tensor load_;  // (E) i64, token-slots routed since the last bias update
};

}  // namespace braid
