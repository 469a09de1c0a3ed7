#include "kernels/cpu/cross_entropy.h"

#include <algorithm>
#include <cmath>
#include <vector>

namespace braid::kernels::cpu {

namespace {

// Below this many elements a loop runs on one thread: waking the team costs more than it saves.
constexpr int64_t kParallelMin = 65536;

}  // namespace

template <typename T>
double cross_entropy_forward(const T* logits, const int64_t* targets, T* lse, int64_t rows,
                             int64_t vocab) {
  std::vector<double> row_loss(static_cast<size_t>(rows));
#pragma omp parallel for schedule(static) if (rows * vocab > kParallelMin)
  for (int64_t r = 0; r < rows; ++r) {
    const T* row = logits + r * vocab;
    const T max = *std::max_element(row, row + vocab);
    T sum_exp = 0;
    for (int64_t j = 0; j < vocab; ++j) sum_exp += std::exp(row[j] - max);
    lse[r] = max + std::log(sum_exp);
    row_loss[size_t(r)] = double(lse[r] - row[targets[r]]);
  }
  double total = 0;
  for (double loss : row_loss) total += loss;
  return total / double(rows);
}

template <typename T>
void cross_entropy_backward(const T* logits, const int64_t* targets, const T* lse, T d_loss,
                            T* d_logits, int64_t rows, int64_t vocab) {
  const T row_scale = d_loss / T(rows);
#pragma omp parallel for schedule(static) if (rows * vocab > kParallelMin)
  for (int64_t r = 0; r < rows; ++r) {
    const T* row = logits + r * vocab;
    T* d_row = d_logits + r * vocab;
    for (int64_t j = 0; j < vocab; ++j) d_row[j] = std::exp(row[j] - lse[r]) * row_scale;
    d_row[targets[r]] -= row_scale;
  }
}

template <typename T>
void cross_entropy_rows(T* logits, int64_t ld, const int64_t* targets, T* lse, T* row_loss,
                        bool write_gradient, T grad_scale, int64_t rows, int64_t vocab) {
#pragma omp parallel for schedule(static) if (rows * vocab > kParallelMin)
  for (int64_t r = 0; r < rows; ++r) {
    T* row = logits + r * ld;
    const T max = *std::max_element(row, row + vocab);
    // Summed in double: a running float sum over a 50K vocabulary drifts by up to ~1e-4 relative,
    // which would make this oracle coarser than the CUDA kernel's tree of partial sums.
    double sum_exp = 0;
    for (int64_t j = 0; j < vocab; ++j) sum_exp += double(std::exp(row[j] - max));
    const T row_lse = max + T(std::log(sum_exp));
    if (lse) lse[r] = row_lse;
    row_loss[r] = row_lse - row[targets[r]];  // read before the gradient overwrites the row
    if (!write_gradient) continue;
    for (int64_t j = 0; j < vocab; ++j) row[j] = std::exp(row[j] - row_lse) * grad_scale;
    row[targets[r]] -= grad_scale;
  }
}

template double cross_entropy_forward<float>(const float*, const int64_t*, float*, int64_t,
                                             int64_t);
template double cross_entropy_forward<double>(const double*, const int64_t*, double*, int64_t,
                                              int64_t);
template void cross_entropy_backward<float>(const float*, const int64_t*, const float*, float,
                                            float*, int64_t, int64_t);
template void cross_entropy_backward<double>(const double*, const int64_t*, const double*, double,
                                             double*, int64_t, int64_t);

template void cross_entropy_rows<float>(float*, int64_t, const int64_t*, float*, float*, bool,
                                        float, int64_t, int64_t);
template void cross_entropy_rows<double>(double*, int64_t, const int64_t*, double*, double*, bool,
                                         double, int64_t, int64_t);

}  // namespace braid::kernels::cpu
