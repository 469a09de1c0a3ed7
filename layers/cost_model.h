// The cost model of MODEL.md section 7 (the paper's Appendix C): parameter counts by formula,
// training FLOPs per token, inference cache bytes, and the token budget matching a FLOP budget.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "layers/model_config.h"

namespace braid {

struct LayerCost {
  int64_t index = 0;         // 0-based
  char kind = 'M';           // T, W, M or H
  int64_t mixer_params = 0;  // including the mixer's pre-norm
  int64_t ffn_params = 0;    // including the FFN's pre-norm
  double flops_per_token = 0;  // this layer's share at context L
  double cache_bytes = 0;      // bf16 inference cache at context L
};

struct ModelCost {
  std::vector<LayerCost> layers;
  int64_t embedding_params = 0;      // vocab * d_model (tied with the LM head)
  int64_t non_embedding_params = 0;  // every layer + the final norm
  int64_t params = 0;                // total
  double flops_per_token = 0;        // 6 * non_embedding_params + attention and scan terms
  double cache_bytes = 0;
  int64_t context = 0;
};

// All figures at context `context`.
ModelCost model_cost(const ModelConfig& config, int64_t context);
// Tokens that spend `flop_budget` at `flops_per_token` (the FLOP-matched comparison, MODEL.md 8).
double tokens_for_flop_budget(const ModelCost& cost, double flop_budget);
// The per-layer table and, as its last line, one JSON object with params, non_embedding_params,
// flops_per_token and cache_bytes (what `train --describe` prints).
std::string describe(const ModelConfig& config, const ModelCost& cost);

}  // namespace braid
