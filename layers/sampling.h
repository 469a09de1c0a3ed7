// Choosing the next token from logits (greedy, temperature, top-k, top-p), seeded by the Philox
// stream so a seed fixes the text on any backend, and a plain generation loop over the full forward
// pass (the infer binary's caches make decoding incremental; this is the simple reference).
#pragma once

#include <cstdint>
#include <vector>

#include "layers/hybrid_lm.h"

namespace braid {

struct SamplingConfig {
  double temperature = 1.0;  // 0 = greedy
  int64_t top_k = 0;         // 0 = no limit
  double top_p = 1.0;        // nucleus mass; 1 = no limit
  uint64_t seed = 0;
};

// `logits` holds `vocab` scores; `draw` selects the Philox stream position of this choice.
uint32_t sample_token(const std::vector<double>& logits, const SamplingConfig& config, uint64_t draw);

// Appends `count` sampled tokens to `prompt`, re-running the model on the last `context` tokens.
std::vector<uint32_t> generate(const HybridLM& model, std::vector<uint32_t> prompt, int64_t count,
                               int64_t context, const SamplingConfig& config);

}  // namespace braid
