#include "kernels/cpu/rmsnorm.h"

#include <algorithm>
#include <cmath>

namespace braid::kernels::cpu {

namespace {

// Normalizes one row whose mean square is known.
template <typename T>
void normalize_row(const T* x, const T* weight, T* y, T* rstd, T sum_of_squares, int64_t dim,
                   T eps) {
  const T r = T(1) / std::sqrt(sum_of_squares / T(dim) + eps);
  *rstd = r;
  for (int64_t j = 0; j < dim; ++j) y[j] = x[j] * r * weight[j];
}

// Columns per task of the weight-gradient reduction: each task sums its columns over every row.
constexpr int64_t kColumnBlock = 64;
// Below this many elements a loop runs on one thread: waking the team costs more than it saves.
constexpr int64_t kParallelMin = 65536;

}  // namespace

template <typename T>
void rmsnorm_forward(const T* x, const T* weight, T* y, T* rstd, int64_t rows, int64_t dim, T eps) {
#pragma omp parallel for schedule(static) if (rows * dim > kParallelMin)
  for (int64_t r = 0; r < rows; ++r) {
    const T* x_row = x + r * dim;
    T sum_of_squares = 0;
    for (int64_t j = 0; j < dim; ++j) sum_of_squares += x_row[j] * x_row[j];
    normalize_row(x_row, weight, y + r * dim, rstd + r, sum_of_squares, dim, eps);
  }
}

template <typename T>
void add_rmsnorm_forward(const T* x, const T* residual, const T* weight, T* sum, T* y, T* rstd,
                         int64_t rows, int64_t dim, T eps) {
#pragma omp parallel for schedule(static) if (rows * dim > kParallelMin)
  for (int64_t r = 0; r < rows; ++r) {
    T* sum_row = sum + r * dim;
    T sum_of_squares = 0;
    for (int64_t j = 0; j < dim; ++j) {
      sum_row[j] = x[r * dim + j] + residual[r * dim + j];
      sum_of_squares += sum_row[j] * sum_row[j];
    }
    normalize_row(sum_row, weight, y + r * dim, rstd + r, sum_of_squares, dim, eps);
  }
}

template <typename T>
void rmsnorm_backward(const T* x, const T* weight, const T* rstd, const T* d_y, const T* d_x_direct,
                      T* d_x, T* d_weight, int64_t rows, int64_t dim) {
#pragma omp parallel for schedule(static) if (rows * dim > kParallelMin)
  for (int64_t r = 0; r < rows; ++r) {
    const T* x_row = x + r * dim;
    const T* d_y_row = d_y + r * dim;
    const T rs = rstd[r];
    T mean_gx = 0;
    for (int64_t j = 0; j < dim; ++j) mean_gx += d_y_row[j] * weight[j] * x_row[j];
    mean_gx /= T(dim);
    T* d_x_row = d_x + r * dim;
    for (int64_t j = 0; j < dim; ++j) {
      d_x_row[j] = rs * d_y_row[j] * weight[j] - rs * rs * rs * x_row[j] * mean_gx;
      if (d_x_direct) d_x_row[j] += d_x_direct[r * dim + j];
    }
  }
  // Parallel over column blocks so each d_w element is summed over rows in order by one thread.
  const int64_t blocks = (dim + kColumnBlock - 1) / kColumnBlock;
#pragma omp parallel for schedule(static) if (rows * dim > kParallelMin)
  for (int64_t b = 0; b < blocks; ++b) {
    const int64_t begin = b * kColumnBlock, end = std::min(dim, begin + kColumnBlock);
    std::fill(d_weight + begin, d_weight + end, T(0));
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t j = begin; j < end; ++j)
        d_weight[j] += d_y[r * dim + j] * x[r * dim + j] * rstd[r];
  }
}

template void rmsnorm_forward<float>(const float*, const float*, float*, float*, int64_t, int64_t,
                                     float);
template void rmsnorm_forward<double>(const double*, const double*, double*, double*, int64_t,
                                      int64_t, double);
template void add_rmsnorm_forward<float>(const float*, const float*, const float*, float*, float*,
                                         float*, int64_t, int64_t, float);
template void add_rmsnorm_forward<double>(const double*, const double*, const double*, double*,
                                          double*, double*, int64_t, int64_t, double);
template void rmsnorm_backward<float>(const float*, const float*, const float*, const float*,
                                      const float*, float*, float*, int64_t, int64_t);
template void rmsnorm_backward<double>(const double*, const double*, const double*, const double*,
                                       const double*, double*, double*, int64_t, int64_t);

}  // namespace braid::kernels::cpu
