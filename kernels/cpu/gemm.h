// General matrix product on row-major matrices: C = alpha * op(A) * op(B) + beta * C, where op(A)
// is (M, K) and op(B) is (K, N); op transposes when asked. The matrix products of every linear
// layer and the tied LM head (MODEL.md section 1) go through it. With BRAID_CBLAS defined it calls
// OpenBLAS; otherwise a cache-blocked kernel computes it.
#pragma once

#include <cstdint>

namespace braid::kernels::cpu {

// A is stored (M, K) with row stride lda, or (K, M) when trans_a; likewise B is (K, N), or (N, K)
// when trans_b; C is (M, N) with row stride ldc. When beta is 0, C is only written (never read), so
// it may hold garbage. Deterministic: each element of C sums over K in a fixed order.
template <typename T>
void gemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, T alpha, const T* A,
          int64_t lda, const T* B, int64_t ldb, T beta, T* C, int64_t ldc);

}  // namespace braid::kernels::cpu
