// Causal grouped-query softmax attention (MODEL.md sections 2 and 4; KERNELS.md sections 7 and 8).
// Q (B, T, Hq, Dqk), K (B, T, Hk, Dqk), V (B, T, Hk, Dv) -> O (B, T, Hq, Dv) and LSE (B, Hq, T),
// the natural-log softmax normalizer of each row, kept for the backward pass. Query head h reads kv
// head h / (Hq / Hk). Dqk may differ from Dv (the intra-hybrid block uses 72 and 128).
#pragma once

#include <cstdint>

namespace braid::kernels::cpu {

struct AttentionDims {
  int64_t batch = 0, time = 0;
  int64_t q_heads = 0, kv_heads = 0;  // q_heads % kv_heads == 0
  int64_t qk_dim = 0, v_dim = 0;
};

// Key s is visible from query t iff
//     s <= t  AND  (window == 0  OR  t - s < window  OR  s < sink).
// window == 0 is plain causal attention. With window > 0 a query sees itself and the window - 1
// keys before it, plus the first `sink` positions of the row (the SWA layer: window 512, sink 64,
// MODEL.md section 2). Every query sees at least itself, so no row is fully masked.
struct AttentionMask {
  int64_t window = 0;
  int64_t sink = 0;
};

inline bool attention_key_visible(int64_t t, int64_t s, const AttentionMask& mask) {
  return s <= t && (mask.window == 0 || t - s < mask.window || s < mask.sink);
}

// Scores are scale * <q_t, k_s>; the softmax runs in T precision (two passes: max, then exp-sum).
template <typename T>
void attention_forward(const T* q, const T* k, const T* v, T* out, T* lse,
                       const AttentionDims& dims, const AttentionMask& mask, T scale);

// Recomputes P = exp(scale * <q_t, k_s> - LSE_t) and, with D_t = <dO_t, O_t> and dP = <dO_t, v_s>,
// dS = P * (dP - D_t):  dQ_t = scale * sum_s dS k_s,  dK_s = scale * sum_t dS q_t,
// dV_s = sum_t P dO_t, where dK and dV sum over the query heads that share a kv head.
// Writes d_q, d_k, d_v fresh; deterministic (each (batch, kv head) is owned by one thread).
template <typename T>
void attention_backward(const T* q, const T* k, const T* v, const T* out, const T* lse,
                        const T* d_out, T* d_q, T* d_k, T* d_v, const AttentionDims& dims,
                        const AttentionMask& mask, T scale);

}  // namespace braid::kernels::cpu
