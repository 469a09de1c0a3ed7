// Decode kernels on CUDA (KERNELS.md section 6), the twins of kernels/cpu/decode.h: attention of new
// tokens over a KV cache (B, Hk, S, D), KV cache writes, RoPE at per-sequence positions, and the
// one-token conv-state (B, C, W-1) and fp32 SSM-state (B, H, P, N) updates. Activations are f32 or
// bf16 (`dtype`), parameters and the SSM state fp32, lengths/positions/slots int32 on the device.
// Parallel strategy: cache attention is flash-decoding (KERNELS.md 6.3): one CTA per (split of a
// row's visible slots, kv head, query row) serves every query head of the kv head's GQA group, so
// each K/V byte is read once per row; K/V tiles stream through shared memory in 16-byte cp.async
// copies, and the splits' partials are merged with their LSE. The SSM update gives each warp rows p
// of one head's P x N state (lanes over N); conv, RoPE and cache writes use one thread per element.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "runtime/dtype.h"

namespace braid::kernels::cuda {

struct CacheAttentionDims {
  int64_t batch = 0, queries = 0, q_heads = 0, kv_heads = 0, qk_dim = 0, v_dim = 0, capacity = 0;
};

// Splits of each row's visible slots cache_attention uses for these dims: enough CTAs to fill the
// card, while a full cache gives each split between 128 and 512 slots (1 when the rows alone fill
// it). The fp32 workspace holds a partial output (Dv) and an LSE per (row, query head, split); it
// is 0 when splits == 1. Both depend on the dims only, so an op can size the workspace up front.
int64_t cache_attention_splits(const CacheAttentionDims& dims);
size_t cache_attention_workspace_floats(const CacheAttentionDims& dims);

// q (B, Tq, Hq, Dqk), caches (B, Hk, S, D) -> out (B, Tq, Hq, Dv); query t of sequence b sits at
// slot lengths[b] - Tq + t and sees slot s iff s <= it and (window == 0 or it - s < window or
// s < sink). `workspace` holds cache_attention_workspace_floats(dims) floats (may be null if 0).
void cache_attention(const void* q, const void* k_cache, const void* v_cache, const int32_t* lengths,
                     void* out, const CacheAttentionDims& dims, int64_t window, int64_t sink,
                     float scale, float* workspace, DType dtype, cudaStream_t stream);

// cache[b, h, slots[b, t], :] = values[b, t, h, :]; values (B, Tq, H, D); negative slots skipped.
void kv_cache_write(void* cache, const void* values, const int32_t* slots, int64_t batch, int64_t time,
                    int64_t heads, int64_t capacity, int64_t dim, DType dtype, cudaStream_t stream);

// The kernel takes the D/2 inverse frequencies by value (host memory here), at most this many.
constexpr int64_t kDecodeRopeMaxHalfDim = 128;

// x, out (B, Tq, H, D); token t of sequence b at position positions[b] + t; angles in double.
void rope_at_positions(const void* x, void* out, const double* inverse_frequencies,
                       const int32_t* positions, int64_t batch, int64_t time, int64_t heads,
                       int64_t head_dim, DType dtype, cudaStream_t stream);

// state (B, C, W-1) of `dtype`, updated in place; x (B, C) rows x_row_stride elements apart; out (B, C)
// contiguous; weight (C, W), bias (C) fp32.
void conv_state_update(void* state, const void* x, int64_t x_row_stride, const float* weight, const float* bias,
                       void* out, int64_t batch, int64_t channels, int64_t width, bool apply_silu, DType dtype,
                       cudaStream_t stream);

// The step's indices from the tokens each sequence holds, advanced in place (so a decode loop keeps
// them on the device): indices (5, B) int32, rows positions, full_lengths, window_slots,
// window_lengths, lengths. With L = lengths[b]: position L, full length L + 1, window slot
// (L < sink ? L : sink + (L - sink) % window; L when window == 0), window length
// min(L + 1, window_capacity); then lengths[b] = L + 1.
void decode_step_indices(int32_t* indices, int64_t batch, int64_t window, int64_t sink,
                         int64_t window_capacity, cudaStream_t stream);

struct SsmStepDims {
  int64_t batch = 0, heads = 0, head_dim = 0, groups = 0, state = 0;
  float dt_min = 0, dt_max = 0;  // the delta clamp; pass +inf for none
  int64_t x_row_stride = 0, dt_row_stride = 0, B_row_stride = 0, C_row_stride = 0;  // as the CPU twin's
};

// state (B, H, P, N) fp32 in place; y (B, H*P) contiguous; rows of x (H*P), dt_raw (H), B and C
// (G*N) of `dtype` at the dims' row strides; dt_bias, A_log, D (H) fp32.
void ssm_state_update(float* state, const void* x, const void* dt_raw, const float* dt_bias,
                      const float* A_log, const void* B, const void* C, const float* D, void* y,
                      const SsmStepDims& dims, DType dtype, cudaStream_t stream);

}  // namespace braid::kernels::cuda
