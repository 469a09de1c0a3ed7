// Causal depthwise conv1d with an optional SiLU on CUDA, channel-last (KERNELS.md section 5; the
// xBC conv of MODEL.md section 3), the twin of kernels/cpu/conv1d.h. x (B, T, C), weight (C, W),
// bias (C):  v[b,t,c] = bias[c] + sum_k weight[c,k] * x[b, t-(W-1)+k, c],  out = SiLU(v) (or v).
// weight[c, W-1] multiplies the current token; inputs before t = 0 come from initial_state
// (B, C, W-1), oldest first, or are 0. Activations and their gradients f32 or bf16; parameters
// and their gradients f32.
// Tiling: a block covers 32 * VEC channels (VEC = 4 when C % 4 == 0) by R sub-tiles of 16 time
// steps; each thread slides a W-tap window in registers over its 16 steps of VEC channels, reading
// the W-1 halo rows before them (and, in backward, after them). Weight and bias gradients: each
// block sums its sub-tiles in a fixed order into a workspace row, then a second kernel adds the
// rows in block order, so the result is deterministic.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

#include "runtime/dtype.h"

namespace braid::kernels::cuda {

// The widths the kernels are compiled for (the models use 4).
constexpr int64_t kConv1dMaxWidth = 4;

// x, out (B, T, C) and initial_state, final_state (B, C, W-1) have `dtype` (f32 or bf16); weight
// (C, W) and bias (C) are f32. initial_state may be null (zeros). Writes out and final_state (the
// last W-1 inputs, oldest first, reaching into initial_state or zeros when T < W-1).
void causal_conv1d_forward(const void* x, const float* weight, const float* bias,
                           const void* initial_state, void* out, void* final_state, int64_t batch,
                           int64_t length, int64_t channels, int64_t width, bool apply_silu,
                           DType dtype, cudaStream_t stream);

// Floats of scratch causal_conv1d_backward needs: (W + 1) partial sums per channel per block.
size_t causal_conv1d_backward_workspace_floats(int64_t batch, int64_t length, int64_t channels,
                                               int64_t width);

// KERNELS.md 5.2 with v recomputed: g = d_out * SiLU'(v) (or d_out);
//   d_x[q] = sum_k weight[k] * g[q + W-1 - k];   d_weight[k] = sum_{b,t} x[t-(W-1)+k] * g[t];
//   d_bias = sum_{b,t} g;   d_initial_state[m] = d_x at q = m - (W-1).
// x, initial_state and the activation gradients are `dtype`: reads d_out (B, T, C) and
// d_final_state (B, C, W-1, may be null: no gradient), writes d_x (B, T, C) and, when
// initial_state is given, d_initial_state (B, C, W-1) (initial_state and d_initial_state both null
// or both not). Writes d_weight (C, W) and d_bias (C) in f32; all arithmetic is fp32.
// `workspace` holds causal_conv1d_backward_workspace_floats(...) floats.
void causal_conv1d_backward(const void* x, const float* weight, const float* bias,
                            const void* initial_state, const void* d_out,
                            const void* d_final_state, void* d_x, float* d_weight,
                            float* d_bias, void* d_initial_state, float* workspace,
                            int64_t batch, int64_t length, int64_t channels, int64_t width,
                            bool apply_silu, DType dtype, cudaStream_t stream);

}  // namespace braid::kernels::cuda
