// The micro model of the CPU tests: every family at d_model 8, small enough for f64 gradchecks.
#pragma once

#include <string>

#include "layers/model_config.h"

namespace braid::testing {

inline ModelConfig micro_config(const std::string& pattern, int64_t vocab = 11) {
  ModelConfig config;
  config.name = "micro-" + pattern;
  config.vocab_size = vocab;
  config.d_model = 8;
  config.pattern = pattern;
  config.init_std = 0.3;  // large enough that every path carries signal at this size
  config.attention = {2, 1, 4, {}};
  config.sliding_window = {3, 1, 10000};
  config.mamba.d_ssm = 8;
  config.mamba.head_dim = 4;
  config.mamba.d_state = 3;
  config.mamba.chunk = 4;
  config.intra.n_heads = 2;
  config.intra.n_kv_heads = 2;
  config.intra.qk_dim = 8;
  config.intra.v_dim = 8;
  config.intra.d_ssm = 8;
  config.intra.mamba_head_dim = 4;
  config.intra.d_state = 3;
  config.ffn.d_ffn = 6;
  config.ffn.n_experts = 3;
  return config;
}

}  // namespace braid::testing
