#include "layers/hybrid_lm.h"

#include "autograd/recompute.h"
#include "layers/ffn.h"
#include "layers/ops/cross_entropy.h"
#include "layers/ops/layout.h"

namespace braid {

HybridLM::HybridLM(const ModelConfig& config, const TensorOptions& options) : config_(config) {
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
  autograd::Var x = embed_->forward(ids);
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

autograd::Var HybridLM::logits(const autograd::Var& ids) const { return embed_->logits(hidden(ids)); }

autograd::Var HybridLM::loss(const autograd::Var& ids, const autograd::Var& targets) const {
  BRAID_CHECK(targets->value.shape() == ids->value.shape(), "targets have shape ",
              shape_str(targets->value.shape()), " but ids have shape ", shape_str(ids->value.shape()));
  autograd::Var flat_logits = ops::reshape(logits(ids), {-1, config_.vocab_size});
  return ops::cross_entropy(flat_logits, ops::reshape(targets, {-1}));
}

void HybridLM::update_routing_biases() {
  for (Block* block : blocks_)
    if (MoE* moe = block->moe()) moe->update_routing_bias();
}

}  // namespace braid
