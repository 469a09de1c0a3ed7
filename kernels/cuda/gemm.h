// General matrix product on row-major device matrices through cuBLASLt: C = alpha * op(A) * op(B)
// + beta * C, with op(A) (M, K) and op(B) (K, N), the same contract as kernels/cpu/gemm.h. Every
// linear layer and the tied LM head (MODEL.md section 1) run through it on the CUDA backend.
// Precision (DESIGN.md "Precision"): f32 or bf16 operands, fp32 accumulation, TF32 off for f32.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

#include "runtime/dtype.h"

namespace braid::kernels::cuda {

// A is stored (M, K) with row stride lda, or (K, M) when trans_a; B is (K, N), or (N, K) when
// trans_b; C is (M, N) with row stride ldc. A, B and C all have `dtype` (f32 or bf16) and live on
// the current CUDA device; C has `c_dtype` (f32 or bf16), so bf16 products can write fp32 results
// (gradients) directly. When beta is 0, C is only written (never read). Runs asynchronously on
// `stream`. The cuBLASLt descriptors and algorithm of each shape are built once and reused; the
// cuBLASLt workspace (one per device) is shared, so calls on different streams of one device must
// not overlap in time.
void gemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, const void* A,
          int64_t lda, const void* B, int64_t ldb, float beta, void* C, int64_t ldc, DType dtype,
          DType c_dtype, cudaStream_t stream);

// C in the operands' dtype.
inline void gemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha,
                 const void* A, int64_t lda, const void* B, int64_t ldb, float beta, void* C,
                 int64_t ldc, DType dtype, cudaStream_t stream = nullptr) {
  gemm(trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc, dtype, dtype, stream);
}

// Number of shapes planned so far (descriptors + algorithm cached), over all devices.
size_t gemm_plan_cache_size();

}  // namespace braid::kernels::cuda
