#include "kernels/cpu/elementwise.h"

#include <algorithm>
#include <vector>

namespace braid::kernels::cpu {

namespace {

// Elements per partial sum in `sum`; columns per task in the d_v reduction.
constexpr int64_t kSumBlock = 4096;
constexpr int64_t kColumnBlock = 64;
// Below this many elements a loop runs on one thread: waking the team costs more than it saves.
constexpr int64_t kParallelMin = 65536;

}  // namespace

template <typename T>
void add(const T* a, const T* b, T* out, int64_t n) {
#pragma omp parallel for schedule(static) if (n > kParallelMin)
  for (int64_t i = 0; i < n; ++i) out[i] = a[i] + b[i];
}

template <typename T>
void sub(const T* a, const T* b, T* out, int64_t n) {
#pragma omp parallel for schedule(static) if (n > kParallelMin)
  for (int64_t i = 0; i < n; ++i) out[i] = a[i] - b[i];
}

template <typename T>
void mul(const T* a, const T* b, T* out, int64_t n) {
#pragma omp parallel for schedule(static) if (n > kParallelMin)
  for (int64_t i = 0; i < n; ++i) out[i] = a[i] * b[i];
}

template <typename T>
void scale(const T* a, T factor, T* out, int64_t n) {
#pragma omp parallel for schedule(static) if (n > kParallelMin)
  for (int64_t i = 0; i < n; ++i) out[i] = a[i] * factor;
}

// Sums term(i) over [0, n) in fixed-size blocks of double partials: the result does not depend on
// the number of threads.
template <typename Term>
double blocked_sum(int64_t n, Term term) {
  const int64_t blocks = (n + kSumBlock - 1) / kSumBlock;
  std::vector<double> partial(size_t(blocks), 0.0);
#pragma omp parallel for schedule(static) if (n > kParallelMin)
  for (int64_t b = 0; b < blocks; ++b) {
    double total = 0;
    for (int64_t i = b * kSumBlock; i < std::min(n, (b + 1) * kSumBlock); ++i)
      total += term(i);
    partial[size_t(b)] = total;
  }
  double total = 0;
  for (double value : partial) total += value;
  return total;
}

template <typename T>
double sum(const T* a, int64_t n) {
  return blocked_sum(n, [a](int64_t i) { return double(a[i]); });
}

template <typename T>
double sum_of_squares(const T* a, int64_t n) {
  return blocked_sum(n, [a](int64_t i) { return double(a[i]) * double(a[i]); });
}

template <typename T>
void mul_broadcast_last_forward(const T* x, const T* v, T* out, int64_t rows, int64_t channels) {
#pragma omp parallel for schedule(static) if (rows * channels > kParallelMin)
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < channels; ++c) out[r * channels + c] = x[r * channels + c] * v[c];
}

template <typename T>
void mul_broadcast_last_backward(const T* x, const T* v, const T* d_out, T* d_x, T* d_v,
                                 int64_t rows, int64_t channels) {
  mul_broadcast_last_forward(d_out, v, d_x, rows, channels);
  // Parallel over column blocks so each d_v element is summed over rows in order by one thread.
  const int64_t blocks = (channels + kColumnBlock - 1) / kColumnBlock;
#pragma omp parallel for schedule(static) if (rows * channels > kParallelMin)
  for (int64_t b = 0; b < blocks; ++b) {
    const int64_t begin = b * kColumnBlock, end = std::min(channels, begin + kColumnBlock);
    std::fill(d_v + begin, d_v + end, T(0));
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t c = begin; c < end; ++c) d_v[c] += d_out[r * channels + c] * x[r * channels + c];
  }
}

#define BRAID_INSTANTIATE_ELEMENTWISE(T)                                                      \
  template void add<T>(const T*, const T*, T*, int64_t);                                      \
  template void sub<T>(const T*, const T*, T*, int64_t);                                      \
  template void mul<T>(const T*, const T*, T*, int64_t);                                      \
  template void scale<T>(const T*, T, T*, int64_t);                                           \
  template double sum<T>(const T*, int64_t);                                                  \
  template double sum_of_squares<T>(const T*, int64_t);                                       \
  template void mul_broadcast_last_forward<T>(const T*, const T*, T*, int64_t, int64_t);      \
  template void mul_broadcast_last_backward<T>(const T*, const T*, const T*, T*, T*, int64_t, \
                                               int64_t);
BRAID_INSTANTIATE_ELEMENTWISE(float)
BRAID_INSTANTIATE_ELEMENTWISE(double)
#undef BRAID_INSTANTIATE_ELEMENTWISE

}  // namespace braid::kernels::cpu
