// HybridLM: embedding, the blocks of the pattern, the final norm and the tied LM head (MODEL.md
// section 1). One graph serves training (loss) and inference (logits) on any backend.
#pragma once

#include <vector>

#include "layers/basic.h"
#include "layers/block.h"
#include "layers/model_config.h"

namespace braid {

class HybridLM : public Module {
 public:
  HybridLM(const ModelConfig& config, const TensorOptions& options);

  // ids (B, T) integer -> hidden states after the final norm (B, T, d).
  autograd::Var hidden(const autograd::Var& ids) const;
  // (B, T, vocab)
  autograd::Var logits(const autograd::Var& ids) const;
  // hidden() over the step's tokens with one cache per block (layers/inference_cache.h; no tape).
  autograd::Var hidden_cached(const autograd::Var& ids, std::vector<LayerCache>& caches,
                              const InferenceStep& step) const;
  // Mean next-token cross-entropy of `ids` against `targets` (both (B, T)).
  autograd::Var loss(const autograd::Var& ids, const autograd::Var& targets) const;

  // The dtype activations flow in (DESIGN.md "Precision"): the parameters' dtype by default, bf16
  // for mixed precision on CUDA (the fp32 parameters are then the master weights).
  void set_activation_dtype(DType dtype);
  DType activation_dtype() const { return activation_dtype_; }
  // Where the parameters (and so every activation) live.
  Device device() const { return embed_->weight()->value.device(); }

  // Re-run each block's forward inside backward instead of keeping its activations.
  void set_recompute(bool enabled) { recompute_ = enabled; }
  // The MoE balancing step (MODEL.md section 5), once per optimizer step.
  void update_routing_biases();

  const ModelConfig& config() const { return config_; }
  const std::vector<Block*>& blocks() const { return blocks_; }
  const Embedding& embedding() const { return *embed_; }

 private:
  ModelConfig config_;
  Embedding* embed_;
  std::vector<Block*> blocks_;
  RMSNorm* final_norm_;
  DType activation_dtype_;
  bool recompute_ = false;
};

}  // namespace braid
