// Decode kernels (KERNELS.md section 6; DESIGN.md "Inference"): new tokens of each sequence against
// its inference caches, forward only. Shapes:
//   KV cache        (B, Hk, S, D)   S slots per sequence (the cache's capacity), one slot per key
//   conv state      (B, C, W-1)     the last W-1 conv inputs, oldest first (kernels/cpu/conv1d.h)
//   SSM state       (B, H, P, N)    fp32 on every backend (the CPU computes in T = f32 or f64)
// The CUDA twins (kernels/cuda/decode.h) take the same arguments.
#pragma once

#include <cstdint>
#include <limits>

#include "kernels/cpu/attention.h"

namespace braid::kernels::cpu {

struct CacheAttentionDims {
  int64_t batch = 0, queries = 0;     // B and Tq, the new tokens of each sequence
  int64_t q_heads = 0, kv_heads = 0;  // q_heads % kv_heads == 0
  int64_t qk_dim = 0, v_dim = 0;
  int64_t capacity = 0;               // S
};

// Attention of Tq query tokens over the KV cache: q (B, Tq, Hq, Dqk), k_cache (B, Hk, S, Dqk),
// v_cache (B, Hk, S, Dv) -> out (B, Tq, Hq, Dv). Slots [0, lengths[b]) of sequence b hold keys
// (1 <= Tq <= lengths[b] <= S); query t sits at slot lengths[b] - Tq + t and sees slot s iff
// attention_key_visible(that slot, s, mask): the mask is applied in slot coordinates.
template <typename T>
void cache_attention(const T* q, const T* k_cache, const T* v_cache, const int32_t* lengths, T* out,
                     const CacheAttentionDims& dims, const AttentionMask& mask, double scale);

// cache[b, h, slots[b, t], :] = values[b, t, h, :] for values (B, Tq, H, D) and slots (B, Tq);
// a negative slot skips that token (e.g. a key a ring buffer would overwrite within the same call).
template <typename T>
void kv_cache_write(T* cache, const T* values, const int32_t* slots, int64_t batch, int64_t time,
                    int64_t heads, int64_t capacity, int64_t dim);

// Rotate-half RoPE (kernels/cpu/rope.h) with a position per sequence: token t of sequence b, in
// x (B, Tq, H, D), rotates by (positions[b] + t) * f_i. Angles in double, as rope_forward.
template <typename T>
void rope_at_positions(const T* x, T* out, const double* inverse_frequencies, const int32_t* positions,
                       int64_t batch, int64_t time, int64_t heads, int64_t head_dim);

// One token of the causal depthwise conv (KERNELS.md 6.2): x (B, C) rows x_row_stride elements apart
// (e.g. columns of a wider projection), weight (C, W), bias (C), out (B, C) contiguous,
// state (B, C, W-1) oldest first, updated in place (shifted left, x appended):
//   out[b, c] = SiLU(bias[c] + sum_{k<W-1} weight[c, k] state[b, c, k] + weight[c, W-1] x[b, c]).
template <typename T>
void conv_state_update(T* state, const T* x, int64_t x_row_stride, const T* weight, const T* bias, T* out,
                       int64_t batch, int64_t channels, int64_t width, bool apply_silu);

struct SsmStepDims {
  int64_t batch = 0, heads = 0, head_dim = 0, groups = 0, state = 0;  // B, H, P, G, N
  double dt_min = 0;  // delta is clamped to [dt_min, dt_max] as in the scan (kernels/cpu/ssd.h)
  double dt_max = std::numeric_limits<double>::infinity();
  // Elements between consecutive sequences' rows of x, dt_raw, B and C (no default: the inputs are
  // usually column slices of one wider projection, each row's columns contiguous).
  int64_t x_row_stride = 0, dt_row_stride = 0, B_row_stride = 0, C_row_stride = 0;
};

// One token of the SSM recurrence (KERNELS.md 6.1), head h reading group h / (H/G):
//   delta = clamp(softplus(dt_raw[b,h] + dt_bias[h])), alpha = exp(-delta exp(A_log[h])),
//   S[b,h] <- alpha S[b,h] + delta x[b,h] ⊗ B[b,g],   y[b,h] = S[b,h] C[b,g] + D[h] x[b,h].
// state (B, H, P, N) in place; y (B, H*P) contiguous; rows of x (H*P), dt_raw (H), B and C (G*N)
// at their dims' row strides, so x[b, h, p] = x[b * x_row_stride + h * P + p].
template <typename T>
void ssm_state_update(T* state, const T* x, const T* dt_raw, const T* dt_bias, const T* A_log,
                      const T* B, const T* C, const T* D, T* y, const SsmStepDims& dims);

}  // namespace braid::kernels::cpu
