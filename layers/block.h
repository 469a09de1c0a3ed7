// A pre-norm residual block (MODEL.md section 1):
//   h   = x + Mixer(RMSNorm(x))
//   out = h + FFN(RMSNorm(h))
// The mixer is attention (T), sliding-window attention (W), Mamba-2 (M) or intra-hybrid (H).
#pragma once

#include "layers/basic.h"
#include "layers/mixer.h"
#include "layers/model_config.h"
#include "layers/ops/rmsnorm.h"

namespace braid {

class MoE;

class Block : public Module {
 public:
  Block(const ModelConfig& config, char kind, const TensorOptions& options);
  autograd::Var forward(const autograd::Var& x) const;

  // The residual stream of the cached path, sum + pending, with the add left to the next RMSNorm
  // (ops::add_rmsnorm, the same numbers as the add then the norm): a decode step launches no
  // residual adds of its own. pending is null when the stream is sum alone.
  struct Stream {
    autograd::Var sum, pending;
  };
  // forward over the step's tokens with this layer's caches (layers/inference_cache.h).
  Stream forward_cached(const Stream& x, LayerCache& cache, const InferenceStep& step) const;
  const Mixer& mixer() const { return *mixer_; }
  char kind() const { return kind_; }
  MoE* moe() const { return moe_; }  // nullptr for a dense FFN

 private:
  char kind_;
  RMSNorm* mixer_norm_;
  Mixer* mixer_;
  RMSNorm* ffn_norm_;
  FeedForward* ffn_;
  MoE* moe_ = nullptr;
};

// The stream made whole (sum, adding its pending part) and its RMSNorm under `norm`.
ops::AddRmsnormResult normalize_stream(const Block::Stream& x, const RMSNorm& norm);

}  // namespace braid
