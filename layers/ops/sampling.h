// Token sampling on the logits' device (kernels/cuda/sampling.h): each row of (batch, vocab) fp32
// logits on CUDA gives the token braid::sample_token (layers/sampling.h) picks from the same row on
// the host, with the same temperature, top-k, top-p, seed and draw; only the ids (batch int32, on
// the device) are produced, so a decode loop copies back batch ids instead of batch x vocab logits.
// CUDA only: on the CPU the host sampler already reads the logits where they are.
#pragma once

#include <cstdint>

#include "runtime/tensor.h"

namespace braid::ops {

// temperature <= 0: greedy; top_k 0: no limit; top_p 1: no limit.
Tensor sample_tokens(const Tensor& logits, double temperature, int64_t top_k, double top_p, uint64_t seed,
                     uint64_t draw);

}  // namespace braid::ops
