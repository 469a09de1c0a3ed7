// MoE routing on a CUDA device (MODEL.md section 5), the twin of kernels/cpu/moe.h: the sigmoid
// router's top-k with a selection-only bias, the stable expert-major permutation of the token-slots,
// gather of token rows into that order, the weighted combine back, and the bias update; plus the
// dense route of inference decode steps (gates zero off the selection, and the gated sum of every
// expert's output), which never reads a device value on the host, so a CUDA graph can record it.
// Shapes: logits (n, E); indices, weights (n, k); slot s = t*k + j; order (n*k); offsets (E+1);
// gather x (n, d) -> xs (n*k, d); combine ys (n*k, d) -> out (n, d); dense gates (n, E); dense
// combine ys (E*n, d) -> out (n, d). E <= 64, k <= 8.
// Parallelism: routing and dense gates are one warp per token (each lane scores experts lane and
// lane+32, k rounds of warp argmax; one selection routine serves both); the permutation is a
// three-pass stable counting sort over 1024-slot blocks (per-block histogram, one-block scan,
// in-block ranks by __match_any_sync + warp prefix, scatter); gather and the combines (routed and
// dense share one kernel) are one warp per row, with 4-wide vector accesses where rows allow. No
// float atomics anywhere: every result is the same on every run.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "runtime/dtype.h"

namespace braid::kernels::cuda {

constexpr int64_t kMoeMaxExperts = 64;  // one warp holds a token's scores in two registers per lane
constexpr int64_t kMoeMaxTopK = 8;      // the selected gates live in registers

// Per token: the k experts with the largest sigmoid(logit) + bias, best first, ties to the lower
// index (the CPU twin's rule, bit for bit: the score is 1 / (1 + exp(-u)) rounded like the CPU's
// f32 expf); weights are the unbiased f32 scores, divided by their sum when `normalize`.
// logits: activation (f32 or bf16, `dtype`); bias (E) f32.
void moe_route_forward(const void* logits, DType dtype, const float* bias, int64_t n,
                       int64_t num_experts, int64_t k, bool normalize, int32_t* indices,
                       float* weights, cudaStream_t stream);

// gates (n, E) f32: moe_route_forward's weights at the experts it selects (same selection, ties,
// scores and normalisation, bit for bit) and 0 at every other expert. logits and bias as there.
void moe_dense_gates(const void* logits, DType dtype, const float* bias, int64_t n,
                     int64_t num_experts, int64_t k, bool normalize, float* gates,
                     cudaStream_t stream);

// out[t] = sum over e of gates[t, e] * ys[e*n + t] (ys: every expert's output on all n rows,
// expert-major), fp32 from 0 in e order, experts with a zero gate skipped (their rows unread).
// ys and out in `dtype`; gates f32.
void moe_dense_combine(const void* ys, DType dtype, const float* gates, int64_t n,
                       int64_t num_experts, int64_t d, void* out, cudaStream_t stream);

// d_logits (n, E) f32 from d_weights (n, k) f32: sigma' at the selected entries (after the quotient
// rule when `normalize`), zero elsewhere.
void moe_route_backward(const void* logits, DType dtype, const int32_t* indices,
                        const float* d_weights, int64_t n, int64_t num_experts, int64_t k,
                        bool normalize, float* d_logits, cudaStream_t stream);

// Scratch int32s moe_permute needs for n*k slots: one count per (1024-slot block, expert).
int64_t moe_permute_workspace_ints(int64_t slots, int64_t num_experts);
// Stable counting sort of the slots by expert: expert e's slots, in increasing slot id (so
// increasing token), are order[offsets[e] .. offsets[e+1]). indices must lie in [0, E).
void moe_permute(const int32_t* indices, int64_t n, int64_t k, int64_t num_experts, int32_t* order,
                 int64_t* offsets, int32_t* workspace, cudaStream_t stream);

// Scratch int32s the inverse permutation (slot -> row of the order) takes: n*k.
int64_t moe_positions_workspace_ints(int64_t n, int64_t k);

// xs[p] = x[order[p] / k]; x and xs in `dtype` (a row copy, any element type of 2 or 4 bytes).
void moe_gather_forward(const void* x, DType dtype, const int32_t* order, int64_t n, int64_t k,
                        int64_t d, void* xs, cudaStream_t stream);

// d_x[t] = sum over j of d_xs[position of slot t*k + j], in j order (f32; no atomics).
// `positions`: moe_positions_workspace_ints(n, k) scratch int32s.
void moe_gather_backward(const float* d_xs, const int32_t* order, int64_t n, int64_t k, int64_t d,
                         float* d_x, int32_t* positions, cudaStream_t stream);

// out[t] = sum over j of weights[t, j] * ys[position of slot t*k + j], in j order, fp32
// accumulation. ys and out in `dtype`; weights f32. `positions` as for moe_gather_backward.
void moe_combine_forward(const void* ys, DType dtype, const float* weights, const int32_t* order,
                         int64_t n, int64_t k, int64_t d, void* out, int32_t* positions,
                         cudaStream_t stream);

// d_ys[p] = weights[s] * d_out[s / k] with s = order[p];  d_weights[s] = <d_out[s / k], ys[p]>
// (a warp-shuffle dot product per row). ys in `dtype`; everything else f32.
void moe_combine_backward(const void* ys, DType dtype, const float* weights, const int32_t* order,
                          const float* d_out, int64_t n, int64_t k, int64_t d, float* d_ys,
                          float* d_weights, cudaStream_t stream);

// In place: bias[e] += rate * sign(mean_load - load[e]) (compared exactly in integers as
// sum(load) - E * load[e]); bias f32 and load i64, both in device memory.
void moe_bias_update(float* bias, const int64_t* load, int64_t num_experts, double rate,
                     cudaStream_t stream);

}  // namespace braid::kernels::cuda
