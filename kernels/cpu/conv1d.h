// Causal depthwise conv1d with an optional SiLU, channel-last (KERNELS.md section 5; the xBC conv of
// MODEL.md section 3). x (B, T, C), weight (C, W), bias (C):
//   v[b,t,c] = bias[c] + sum_k weight[c,k] * x[b, t-(W-1)+k, c],   out = SiLU(v) (or v)
// weight[c, W-1] multiplies the current token (PyTorch Conv1d with W-1 left padding). Inputs before
// t = 0 come from initial_state (B, C, W-1), oldest first, or are 0 when it is null.
#pragma once

#include <cstdint>

namespace braid::kernels::cpu {

// Writes out (B, T, C) and final_state (B, C, W-1): the last W-1 inputs, oldest first, reaching
// into initial_state (or zeros) when T < W-1.
template <typename T>
void causal_conv1d_forward(const T* x, const T* weight, const T* bias, const T* initial_state,
                           T* out, T* final_state, int64_t batch, int64_t length, int64_t channels,
                           int64_t width, bool apply_silu);

// KERNELS.md 5.2, v recomputed: g = d_out * SiLU'(v) (or d_out);
//   d_x[q] = sum_k weight[k] * g[q + W-1 - k];   d_weight[k] = sum_{b,t} x[t-(W-1)+k] * g[t];
//   d_bias = sum_{b,t} g;   d_initial_state[m] = d_x at q = m - (W-1).
// d_final_state (may be null: no gradient) adds to the inputs the final state copied.
// d_initial_state is written only when initial_state is given (both null or both not).
template <typename T>
void causal_conv1d_backward(const T* x, const T* weight, const T* bias, const T* initial_state,
                            const T* d_out, const T* d_final_state, T* d_x, T* d_weight, T* d_bias,
                            T* d_initial_state, int64_t batch, int64_t length, int64_t channels,
                            int64_t width, bool apply_silu);

}  // namespace braid::kernels::cpu
