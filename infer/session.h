// An inference session: a batch of sequences decoded together over one model, with the caches each
// sequence needs (DESIGN.md "Inference"; MODEL.md section 7 for their sizes):
//   T and H layers (attention part)  K and V of every position so far
//   W layers                          K and V of the last `window` positions plus the `sink` first ones
//   M and H layers (Mamba part)       conv state (the last conv_width - 1 inputs) and the fp32 SSM
//                                     state (heads x head_dim x state_dim)
// Prefill runs the training forward (no tape) over the prompts, in chunks of `prefill_chunk` tokens
// when set, and fills the caches; decode appends one token per sequence with the decode kernels. On
// CUDA the decode step is captured once as a CUDA graph and replayed.
//
// Sequences of one batch may have prompts of different lengths: each sequence's caches and logits
// are exactly those of that sequence run alone (padding never reaches a state).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <vector>

#include "layers/hybrid_lm.h"
#include "layers/sampling.h"
#include "runtime/tensor.h"

namespace braid::infer {

struct SessionOptions {
  int64_t batch = 1;          // sequences decoded together
  int64_t max_length = 0;     // tokens one sequence can hold (prompt + generated); sizes the caches
  int64_t prefill_chunk = 0;  // prompt tokens per prefill pass; 0 = the whole prompt in one pass
  bool cuda_graph = true;     // capture the decode step once as a CUDA graph and replay it (CUDA
                              // only; a model whose step cannot be captured runs eagerly)
};

class Session {
 public:
  // The model must outlive the session. Its parameters' device and activation dtype are the
  // session's (bf16 or fp32 on CUDA, fp32 on the CPU).
  Session(const HybridLM& model, SessionOptions options);
  ~Session();
  Session(const Session&) = delete;
  Session& operator=(const Session&) = delete;

  // Starts every sequence afresh from its prompt: prompts.size() == batch, each 1..max_length
  // tokens, lengths may differ. Returns the next-token logits after each prompt's last token,
  // (batch, vocab) fp32 on the model's device.
  Tensor prefill(const std::vector<std::vector<uint32_t>>& prompts);

  // Appends one token to every sequence; returns the next-token logits, (batch, vocab) fp32 on the
  // model's device. Raises braid::Error when a sequence would exceed max_length.
  Tensor decode(const std::vector<uint32_t>& tokens);

  // Prefill, then `count` steps of sample-and-decode (sampling on the model's device; the same seed
  // gives the same tokens). Returns the generated tokens per sequence; `on_token(sequence, token)`
  // is called as each token is chosen (for streaming).
  std::vector<std::vector<uint32_t>> generate(
      const std::vector<std::vector<uint32_t>>& prompts, int64_t count, const SamplingConfig& sampling,
      const std::function<void(int64_t sequence, uint32_t token)>& on_token = {});

  int64_t length(int64_t sequence) const;  // tokens held by a sequence
  // Bytes of all caches as allocated for max_length (per MODEL.md section 7's formula at the
  // session's dtype, times batch).
  int64_t cache_bytes() const;
  const SessionOptions& options() const { return options_; }
  // Whether decode steps replay a captured CUDA graph: false on the CPU, with cuda_graph off, before
  // the first decode step, and when the step could not be captured (it then runs eagerly).
  bool decode_graph_captured() const;

 private:
  struct State;
  const HybridLM& model_;
  SessionOptions options_;
  std::unique_ptr<State> state_;
};

}  // namespace braid::infer
