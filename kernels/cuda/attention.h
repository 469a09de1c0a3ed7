// Causal grouped-query flash attention on CUDA (MODEL.md sections 2 and 4; KERNELS.md sections
// 7-8), the device twin of kernels/cpu/attention.h: same dims, mask (causal, sliding window + sink)
// and LSE contract. q (B, T, Hq, Dqk), k (B, T, Hk, Dqk), v (B, T, Hk, Dv) -> out (B, T, Hq, Dv)
// and lse (B, Hq, T) fp32 (natural log). bf16: FA2-style mma.sync kernels; the forward runs one CTA
// per 128 query rows of one (b, hq) walking 64-key tiles, the backward one CTA per 128 keys of one
// (b, hk) walking the query blocks of every query head of its group. f32: simple SIMT kernels.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "kernels/cpu/attention.h"  // AttentionDims, AttentionMask: the shared contract (plain structs)
#include "runtime/dtype.h"

namespace braid::kernels::cuda {

using kernels::cpu::AttentionDims;
using kernels::cpu::AttentionMask;

// Whether the CUDA kernels handle these head dims in `dtype`: bf16 needs Dqk in {64, 72, 96, 128}
// and Dv == Dqk or Dv == 128; f32 takes any Dqk, Dv in [1, 128].
bool attention_supported(int64_t qk_dim, int64_t v_dim, DType dtype);

// Writes out (in `dtype`, f32 or bf16) and lse (f32). Scores are scale * <q_t, k_s>. bf16 runs the
// tensor-core kernel (P rounded to bf16 for P·V, fp32 statistics); f32 runs exact fp32 arithmetic.
// bf16 operands must be 16-byte aligned.
void attention_forward(const void* q, const void* k, const void* v, void* out, float* lse,
                       const AttentionDims& dims, const AttentionMask& mask, float scale,
                       DType dtype, cudaStream_t stream);

// Scratch of attention_backward in floats: per-row D = <dO, O> and log2-scaled LSE (padded to the
// query tile), plus for bf16 a bf16 copy of dO.
size_t attention_backward_workspace_floats(const AttentionDims& dims, DType dtype);

// Gradients (all f32, written fresh) from q, k, v, out (dtype), lse (f32) and d_out (f32):
// dQ = scale * dS K, dK = scale * dSᵀ Q, dV = Pᵀ dO with dS = P ⊙ (dP − D), GQA summed over the
// group. bf16: dK and dV are deterministic; dQ is accumulated with fp32 atomicAdd across key blocks
// (KERNELS.md section 8), so its last bits may change from run to run. f32: fully deterministic
// (dQ and dK/dV come from two separate passes).
void attention_backward(const void* q, const void* k, const void* v, const void* out,
                        const float* lse, const float* d_out, float* d_q, float* d_k, float* d_v,
                        float* workspace, const AttentionDims& dims, const AttentionMask& mask,
                        float scale, DType dtype, cudaStream_t stream);

}  // namespace braid::kernels::cuda
