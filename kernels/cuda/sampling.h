// Token sampling on CUDA: the twin of braid::sample_token (layers/sampling.cpp) for each row of
// (batch, vocab) fp32 logits, so only the chosen ids (batch int32) leave the device. Greedy
// (temperature <= 0) takes the first maximum; otherwise the candidates are taken in descending
// logit order (ties: lower id first), cut by top-k then top-p, weighted exp((l - max) / temperature)
// in double, and chosen by one Philox uniform at (seed, draw) per row, as on the host.
// Parallel strategy: greedy is one CTA per row (block argmax); sampling sorts all rows' (row,
// descending logit) keys with CUB's stable radix sort (ids stay in ascending order among ties), then
// one CTA per row forms the prefix sums of the probabilities (each thread one contiguous run of
// candidates, runs joined by a block scan) and finds the top-p cut and the drawn candidate in them.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "runtime/dtype.h"

namespace braid::kernels::cuda {

struct SamplingParams {
  double temperature = 1.0;  // <= 0: greedy
  int64_t top_k = 0;         // 0: no limit
  double top_p = 1.0;
  uint64_t seed = 0;
  uint64_t draw = 0;         // the Philox stream position of this choice (the step)
};

// Bytes of scratch sample_tokens needs for these sizes (0 for greedy).
size_t sample_tokens_workspace_bytes(int64_t batch, int64_t vocab, const SamplingParams& params);

// logits (batch, vocab) fp32 -> tokens (batch) int32. `workspace` holds
// sample_tokens_workspace_bytes(...) bytes (may be null when that is 0).
void sample_tokens(const float* logits, int32_t* tokens, int64_t batch, int64_t vocab,
                   const SamplingParams& params, void* workspace, cudaStream_t stream);

}  // namespace braid::kernels::cuda
