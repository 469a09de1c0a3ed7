#pragma once

#include "autograd/variable.h"

namespace braid::ops {

struct Conv1dOutput {
  autograd::Var out;          // (B, T, C)
  autograd::Var final_state;  // (B, C, W-1): the last W-1 inputs, oldest first (the decode cache)
};

// Causal depthwise conv1d over time of channel-last x (B, T, C), then SiLU when `silu`
// (KERNELS.md section 5, MODEL.md section 3's xBC conv). weight (C, W), weight[:, W-1] multiplies
// the current token; bias (C). initial_state (B, C, W-1), oldest first, holds the inputs before
// t = 0; pass nullptr for zeros. Both outputs are differentiable.
Conv1dOutput conv1d(const autograd::Var& x, const autograd::Var& weight, const autograd::Var& bias,
                    const autograd::Var& initial_state, bool silu = true);

}  // namespace braid::ops
