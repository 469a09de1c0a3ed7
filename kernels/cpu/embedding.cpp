#include "kernels/cpu/embedding.h"

#include <algorithm>
#include <vector>

namespace braid::kernels::cpu {

namespace {

// Below this many elements a loop runs on one thread: waking the team costs more than it saves.
constexpr int64_t kParallelMin = 65536;

}  // namespace

template <typename T>
void embedding_forward(const T* table, const int64_t* ids, T* out, int64_t n, int64_t dim) {
#pragma omp parallel for schedule(static) if (n * dim > kParallelMin)
  for (int64_t i = 0; i < n; ++i) std::copy_n(table + ids[i] * dim, dim, out + i * dim);
}

template <typename T>
void embedding_backward(const int64_t* ids, const T* d_out, T* d_table, int64_t n, int64_t vocab,
                        int64_t dim) {
  // Counting sort of the positions by id (stable, so each id's positions stay in order); then every
  // row of d_table is owned by one thread and summed in a fixed order, with no atomics.
  std::vector<int64_t> first(size_t(vocab) + 1, 0);
  for (int64_t i = 0; i < n; ++i) ++first[size_t(ids[i]) + 1];
  for (int64_t v = 0; v < vocab; ++v) first[size_t(v) + 1] += first[size_t(v)];
  std::vector<int64_t> positions(static_cast<size_t>(n));
  std::vector<int64_t> next(first.begin(), first.end() - 1);
  for (int64_t i = 0; i < n; ++i) positions[size_t(next[size_t(ids[i])]++)] = i;

#pragma omp parallel for schedule(dynamic, 64) if (vocab * dim > kParallelMin)
  for (int64_t v = 0; v < vocab; ++v) {
    T* row = d_table + v * dim;
    std::fill_n(row, dim, T(0));
    for (int64_t p = first[size_t(v)]; p < first[size_t(v) + 1]; ++p) {
      const T* source = d_out + positions[size_t(p)] * dim;
      for (int64_t j = 0; j < dim; ++j) row[j] += source[j];
    }
  }
}

template void embedding_forward<float>(const float*, const int64_t*, float*, int64_t, int64_t);
template void embedding_forward<double>(const double*, const int64_t*, double*, int64_t, int64_t);
template void embedding_backward<float>(const int64_t*, const float*, float*, int64_t, int64_t,
                                        int64_t);
template void embedding_backward<double>(const int64_t*, const double*, double*, int64_t, int64_t,
                                         int64_t);

}  // namespace braid::kernels::cpu
