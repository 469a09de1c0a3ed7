// The inference benchmark (MODEL.md section 9, the paper's protocol by default): a batch of random
// prompts is prefilled, then the session decodes (greedy sampling on the device, as in generation)
// until each sequence holds `total` tokens. Reports prefill tokens/s, decode tokens/s and ms per
// step, the caches' size (Session::cache_bytes) and the device's peak allocated memory.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "layers/hybrid_lm.h"

namespace braid::infer {

struct ThroughputOptions {
  int64_t batch = 4;
  int64_t prompt = 512;
  std::vector<int64_t> totals = {8192, 32768};  // tokens per sequence at the end
  int64_t prefill_chunk = 0;                    // 0: the whole prompt in one pass
  bool cuda_graph = true;
  uint64_t seed = 0;                            // of the random prompts
};

struct ThroughputResult {
  int64_t total = 0;
  double prefill_seconds = 0, decode_seconds = 0;
  int64_t decode_steps = 0;
  double prefill_tokens_per_second = 0;
  double decode_tokens_per_second = 0;  // batch x steps / decode time
  double ms_per_step = 0;
  int64_t cache_bytes = 0;
  int64_t peak_bytes = 0;  // the allocator's peak during the run (weights included)
};

// One result per total; `progress(line)` reports each finished measurement.
std::vector<ThroughputResult> measure_throughput(const HybridLM& model, const ThroughputOptions& options,
                                                 const std::function<void(const std::string&)>& progress = {});

}  // namespace braid::infer
