#include "layers/hybrid_lm.h"

#include "autograd/recompute.h"
#include "layers/ffn.h"
#include "layers/ops/cross_entropy.h"
#include "layers/ops/embedding.h"
#include "layers/ops/layout.h"

namespace braid {

HybridLM::HybridLM(const ModelConfig& config, const TensorOptions& options)
    : config_(config), activation_dtype_(options.dtype) {
  validate(config);
  embed_ = add_module("embed", std::make_unique<Embedding>(config.vocab_size, config.d_model, options,
                                                           config.init_std));
  for (int64_t i = 0; i < config.n_layers(); ++i)
    blocks_.push_back(add_module("layers." + std::to_string(i),
                                 std::make_unique<Block>(config, config.pattern[size_t(i)], options)));
  final_norm_ = add_module("final_norm", std::make_unique<RMSNorm>(config.d_model, config.norm_eps, options));
}

autograd::Var HybridLM::hidden(const autograd::Var& ids) const {
  BRAID_CHECK(ids->value.dim() == 2, "model input ids must be (batch, time), got shape ",
              shape_str(ids->value.shape()));
  autograd::Var x = ops::cast(embed_->forward(ids), activation_dtype_);
  for (const Block* block : blocks_) {
    if (recompute_) {
      x = autograd::recompute([block](const std::vector<autograd::Var>& in) {
            return std::vector<autograd::Var>{block->forward(in[0])};
          }, {x})[0];
    } else {
      x = block->forward(x);
    }
  }
  return final_norm_->forward(x);
}

autograd::Var HybridLM::hidden_cached(const autograd::Var& ids, std::vector<LayerCache>& caches,
                                      const InferenceStep& step) const {
  BRAID_CHECK(ids->value.dim() == 2, "model input ids must be (batch, time), got shape ",
              shape_str(ids->value.shape()));
  BRAID_CHECK(caches.size() == blocks_.size(), "hidden_cached: ", caches.size(), " caches for ",
              blocks_.size(), " blocks");
  // The lookup writes the activation dtype itself: no cast kernel after it.
  Block::Stream x{ops::embedding(embed_->weight(), ids, activation_dtype_), nullptr};
  for (size_t i = 0; i < blocks_.size(); ++i) x = blocks_[i]->forward_cached(x, caches[i], step);
  return normalize_stream(x, *final_norm_).normed;
}

autograd::Var HybridLM::logits(const autograd::Var& ids) const { return embed_->logits(hidden(ids)); }

autograd::Var HybridLM::loss(const autograd::Var& ids, const autograd::Var& targets) const {
  BRAID_CHECK(targets->value.shape() == ids->value.shape(), "targets have shape ",
              shape_str(targets->value.shape()), " but ids have shape ", shape_str(ids->value.shape()));
  // The tied head and the loss in one op: the logits of every position never exist at once.
  return ops::lm_head_cross_entropy(hidden(ids), embed_->weight(), targets);
}

void HybridLM::set_activation_dtype(DType dtype) {
  BRAID_CHECK(dtype == DType::f32 || dtype == DType::f64 || dtype == DType::bf16,
              "activations are f32, f64 or bf16, not ", dtype_name(dtype));
  BRAID_CHECK(dtype != DType::bf16 || device().is_cuda(),
              "bf16 activations need a CUDA device; the CPU backend computes in fp32");
  activation_dtype_ = dtype;
}

void HybridLM::update_routing_biases() {
  for (Block* block : blocks_)
    if (MoE* moe = block->moe()) moe->update_routing_bias();
}

}  // namespace braid
