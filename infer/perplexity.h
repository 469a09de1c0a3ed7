// Perplexity and position-wise loss (MODEL.md section 9): the tokens are cut into windows of
// `context` positions (window k predicts tokens k*context+1 .. (k+1)*context from the ones before it
// in the window, so every token after the first is a target exactly once); each window runs the
// full forward with no tape, and the loss comes from the fused head + cross-entropy op, so the
// logits of a whole window never exist at once. Losses are also averaged per bucket of positions
// within the window (1K by default), which shows length extrapolation when `context` exceeds the
// training length.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "layers/hybrid_lm.h"

namespace braid::infer {

struct PerplexityOptions {
  int64_t bucket = 1024;       // positions per position-wise bucket
  int64_t batch = 1;           // windows per forward pass
  int64_t max_tokens = 0;      // evaluate at most this many targets (0 = all)
  // Called after each forward pass with (targets done, targets in all).
  std::function<void(int64_t, int64_t)> progress;
};

struct PositionBucket {
  int64_t begin = 0, end = 0;  // window positions [begin, end)
  int64_t count = 0;           // targets scored there
  double mean_nll = 0;
};

struct PerplexityResult {
  int64_t tokens = 0;   // targets scored
  int64_t windows = 0;
  double nll_sum = 0;   // nats
  double mean_nll() const { return tokens ? nll_sum / double(tokens) : 0; }
  double perplexity() const;
  std::vector<PositionBucket> buckets;
};

// A window is up to context + 1 tokens: its first token is context only, every later one a target.
using Window = std::vector<uint32_t>;

// `tokens` cut into windows of context + 1 tokens with stride `context` (the last one may be
// shorter; one of a single token predicts nothing and is dropped).
std::vector<Window> split_windows(const std::vector<uint32_t>& tokens, int64_t context);
// The rows of token shards (paths or globs, comma-separated) in file order, as the training data
// loader reads them (train/data_loader.h: stride `context`, never crossing a shard, ids checked
// below `vocab_size`).
std::vector<Window> shard_windows(const std::string& shards, int64_t context, int64_t vocab_size);

PerplexityResult evaluate_perplexity(const HybridLM& model, const std::vector<Window>& windows,
                                     const PerplexityOptions& options);

}  // namespace braid::infer
