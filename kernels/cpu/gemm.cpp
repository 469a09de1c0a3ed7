#include "kernels/cpu/gemm.h"

#include <algorithm>
#include <type_traits>
#include <vector>

#include "runtime/error.h"

#ifdef BRAID_CBLAS
#include <cblas.h>
#endif

namespace braid::kernels::cpu {

namespace {

// Tile sizes: a (kTileK x kTileN) panel of B stays in L2 while one row of the (kTileM x kTileN)
// accumulator tile stays in L1 and takes kTileK rank-1 updates.
constexpr int64_t kTileM = 64;
constexpr int64_t kTileN = 128;
constexpr int64_t kTileK = 256;

// Copies rows [i0, i0 + rows) and depths [k0, k0 + depth) of op(A) into `panel`, (rows, depth)
// row-major, so the inner loops read it contiguously whatever A's layout.
template <typename T>
void pack_a(bool trans_a, const T* A, int64_t lda, int64_t i0, int64_t k0, int64_t rows,
            int64_t depth, T* panel) {
  if (trans_a) {
    for (int64_t i = 0; i < rows; ++i)
      for (int64_t k = 0; k < depth; ++k) panel[i * depth + k] = A[(k0 + k) * lda + i0 + i];
  } else {
    for (int64_t i = 0; i < rows; ++i)
      std::copy_n(A + (i0 + i) * lda + k0, depth, panel + i * depth);
  }
}

// Copies depths [k0, k0 + depth) and columns [j0, j0 + cols) of op(B) into `panel`, (depth, cols).
template <typename T>
void pack_b(bool trans_b, const T* B, int64_t ldb, int64_t k0, int64_t j0, int64_t depth,
            int64_t cols, T* panel) {
  if (trans_b) {
    for (int64_t k = 0; k < depth; ++k)
      for (int64_t j = 0; j < cols; ++j) panel[k * cols + j] = B[(j0 + j) * ldb + k0 + k];
  } else {
    for (int64_t k = 0; k < depth; ++k)
      std::copy_n(B + (k0 + k) * ldb + j0, cols, panel + k * cols);
  }
}

// acc (rows, cols) += a_panel (rows, depth) * b_panel (depth, cols).
//
// The register tile: a block of kMicroRows x kMicroCols accumulators lives in registers (with AVX2,
// 4 rows x 2 vectors of 8 floats) while k runs over the whole depth, so each step loads one row of
// B and kMicroRows scalars of A for kMicroRows * kMicroCols multiply-adds. Edges fall back to the
// same loop with runtime bounds.
constexpr int64_t kMicroRows = 4;
constexpr int64_t kMicroCols = 16;

template <typename T>
void micro_tile(const T* __restrict a_panel, const T* __restrict b_panel, T* __restrict acc, int64_t i,
                int64_t j, int64_t cols, int64_t depth) {
  T c[kMicroRows][kMicroCols];
  for (int64_t r = 0; r < kMicroRows; ++r)
    for (int64_t jj = 0; jj < kMicroCols; ++jj) c[r][jj] = acc[(i + r) * cols + j + jj];
  for (int64_t k = 0; k < depth; ++k) {
    const T* __restrict b_row = b_panel + k * cols + j;
    for (int64_t r = 0; r < kMicroRows; ++r) {
      const T a = a_panel[(i + r) * depth + k];
#pragma omp simd
      for (int64_t jj = 0; jj < kMicroCols; ++jj) c[r][jj] += a * b_row[jj];
    }
  }
  for (int64_t r = 0; r < kMicroRows; ++r)
    for (int64_t jj = 0; jj < kMicroCols; ++jj) acc[(i + r) * cols + j + jj] = c[r][jj];
}

template <typename T>
void multiply_panels(const T* __restrict a_panel, const T* __restrict b_panel, T* __restrict acc,
                     int64_t rows, int64_t cols, int64_t depth) {
  const int64_t full_rows = rows / kMicroRows * kMicroRows, full_cols = cols / kMicroCols * kMicroCols;
  for (int64_t i = 0; i < full_rows; i += kMicroRows)
    for (int64_t j = 0; j < full_cols; j += kMicroCols) micro_tile(a_panel, b_panel, acc, i, j, cols, depth);
  // Edges: the rows below the last full block (all columns), and the columns right of the last
  // full block (in the full rows).
  auto edge = [&](int64_t i_begin, int64_t i_end, int64_t j_begin) {
    for (int64_t i = i_begin; i < i_end; ++i) {
      T* __restrict acc_row = acc + i * cols;
      for (int64_t k = 0; k < depth; ++k) {
        const T a = a_panel[i * depth + k];
        const T* __restrict b_row = b_panel + k * cols;
        for (int64_t j = j_begin; j < cols; ++j) acc_row[j] += a * b_row[j];
      }
    }
  };
  if (full_cols < cols) edge(0, full_rows, full_cols);
  edge(full_rows, rows, 0);
}

template <typename T>
void blocked_gemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, T alpha, const T* A,
                  int64_t lda, const T* B, int64_t ldb, T beta, T* C, int64_t ldc) {
  const int64_t tiles_m = (M + kTileM - 1) / kTileM, tiles_n = (N + kTileN - 1) / kTileN;
  // A single tile is not worth waking the thread team for (small products inside gradcheck).
#pragma omp parallel if (tiles_m * tiles_n > 1)
  {
    std::vector<T> a_panel(kTileM * kTileK), b_panel(kTileK * kTileN), acc(kTileM * kTileN);
#pragma omp for collapse(2) schedule(static)
    for (int64_t tile_m = 0; tile_m < tiles_m; ++tile_m) {
      for (int64_t tile_n = 0; tile_n < tiles_n; ++tile_n) {
        const int64_t i0 = tile_m * kTileM, rows = std::min(kTileM, M - i0);
        const int64_t j0 = tile_n * kTileN, cols = std::min(kTileN, N - j0);
        std::fill_n(acc.data(), rows * cols, T(0));
        for (int64_t k0 = 0; k0 < K; k0 += kTileK) {
          const int64_t depth = std::min(kTileK, K - k0);
          pack_a(trans_a, A, lda, i0, k0, rows, depth, a_panel.data());
          pack_b(trans_b, B, ldb, k0, j0, depth, cols, b_panel.data());
          multiply_panels(a_panel.data(), b_panel.data(), acc.data(), rows, cols, depth);
        }
        for (int64_t i = 0; i < rows; ++i) {
          T* c_row = C + (i0 + i) * ldc + j0;
          const T* acc_row = acc.data() + i * cols;
          // beta == 0 must not read C: it may be uninitialized (and NaN * 0 is NaN).
          if (beta == T(0)) {
            for (int64_t j = 0; j < cols; ++j) c_row[j] = alpha * acc_row[j];
          } else {
            for (int64_t j = 0; j < cols; ++j) c_row[j] = alpha * acc_row[j] + beta * c_row[j];
          }
        }
      }
    }
  }
}

}  // namespace

template <typename T>
void gemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, T alpha, const T* A,
          int64_t lda, const T* B, int64_t ldb, T beta, T* C, int64_t ldc) {
  BRAID_CHECK(M >= 0 && N >= 0 && K >= 0, "gemm: negative size M=", M, " N=", N, " K=", K);
  BRAID_CHECK(lda >= (trans_a ? M : K) && ldb >= (trans_b ? K : N) && ldc >= N,
              "gemm: leading dimensions lda=", lda, " ldb=", ldb, " ldc=", ldc,
              " too small for M=", M, " N=", N, " K=", K);
  if (M == 0 || N == 0) return;
#ifdef BRAID_CBLAS
  // BLAS rejects leading dimensions of 0, which K == 0 gives; the blocked kernel scales C instead.
  if (K > 0) {
    const CBLAS_TRANSPOSE op_a = trans_a ? CblasTrans : CblasNoTrans;
    const CBLAS_TRANSPOSE op_b = trans_b ? CblasTrans : CblasNoTrans;
    if constexpr (std::is_same_v<T, float>)
      cblas_sgemm(CblasRowMajor, op_a, op_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
    else
      cblas_dgemm(CblasRowMajor, op_a, op_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
    return;
  }
#endif
  blocked_gemm(trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}

template void gemm<float>(bool, bool, int64_t, int64_t, int64_t, float, const float*, int64_t,
                          const float*, int64_t, float, float*, int64_t);
template void gemm<double>(bool, bool, int64_t, int64_t, int64_t, double, const double*, int64_t,
                           const double*, int64_t, double, double*, int64_t);

}  // namespace braid::kernels::cpu
