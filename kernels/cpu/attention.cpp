#include "kernels/cpu/attention.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

namespace braid::kernels::cpu {

namespace {

// Offset of the row (b, t, head) in a (B, T, heads, dim) operand.
int64_t row_offset(const AttentionDims& dims, int64_t b, int64_t t, int64_t heads, int64_t head,
                   int64_t dim) {
  return ((b * dims.time + t) * heads + head) * dim;
}

// Calls visit(s) for every key visible from query t, in increasing s. The visible keys form at most
// two spans, the sink [0, sink_end) and the window [window_begin, t], so masked keys cost nothing.
template <typename Visit>
void for_each_visible_key(int64_t t, const AttentionMask& mask, Visit&& visit) {
  int64_t window_begin = mask.window == 0 ? 0 : std::max<int64_t>(0, t - mask.window + 1);
  int64_t sink_end = std::min(mask.sink, window_begin);
  for (int64_t s = 0; s < sink_end; ++s) visit(s);
  for (int64_t s = window_begin; s <= t; ++s) visit(s);
}

template <typename T>
T dot(const T* a, const T* b, int64_t n) {
  T sum = 0;
  for (int64_t i = 0; i < n; ++i) sum += a[i] * b[i];
  return sum;
}

// y += alpha * x
template <typename T>
void axpy(T alpha, const T* x, T* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] += alpha * x[i];
}

}  // namespace

template <typename T>
void attention_forward(const T* q, const T* k, const T* v, T* out, T* lse,
                       const AttentionDims& dims, const AttentionMask& mask, T scale) {
  const int64_t group = dims.q_heads / dims.kv_heads;
#pragma omp parallel for collapse(2) schedule(dynamic)
  for (int64_t b = 0; b < dims.batch; ++b) {
    for (int64_t h = 0; h < dims.q_heads; ++h) {
      const int64_t hk = h / group;
      std::vector<T> scores(dims.time);
      for (int64_t t = 0; t < dims.time; ++t) {
        const T* q_row = q + row_offset(dims, b, t, dims.q_heads, h, dims.qk_dim);
        T max_score = -std::numeric_limits<T>::infinity();
        for_each_visible_key(t, mask, [&](int64_t s) {
          scores[s] = scale * dot(q_row, k + row_offset(dims, b, s, dims.kv_heads, hk, dims.qk_dim),
                                  dims.qk_dim);
          max_score = std::max(max_score, scores[s]);
        });
        T* o_row = out + row_offset(dims, b, t, dims.q_heads, h, dims.v_dim);
        std::fill(o_row, o_row + dims.v_dim, T(0));
        T normalizer = 0;
        for_each_visible_key(t, mask, [&](int64_t s) {
          T p = std::exp(scores[s] - max_score);
          normalizer += p;
          axpy(p, v + row_offset(dims, b, s, dims.kv_heads, hk, dims.v_dim), o_row, dims.v_dim);
        });
        for (int64_t j = 0; j < dims.v_dim; ++j) o_row[j] /= normalizer;
        lse[(b * dims.q_heads + h) * dims.time + t] = max_score + std::log(normalizer);
      }
    }
  }
}

template <typename T>
void attention_backward(const T* q, const T* k, const T* v, const T* out, const T* lse,
                        const T* d_out, T* d_q, T* d_k, T* d_v, const AttentionDims& dims,
                        const AttentionMask& mask, T scale) {
  const int64_t group = dims.q_heads / dims.kv_heads;
  // One thread owns a (batch, kv head): its dK/dV rows and the dQ rows of its query heads, so every
  // gradient is accumulated by one thread in a fixed order.
#pragma omp parallel for collapse(2) schedule(dynamic)
  for (int64_t b = 0; b < dims.batch; ++b) {
    for (int64_t hk = 0; hk < dims.kv_heads; ++hk) {
      for (int64_t s = 0; s < dims.time; ++s) {
        T* dk_row = d_k + row_offset(dims, b, s, dims.kv_heads, hk, dims.qk_dim);
        T* dv_row = d_v + row_offset(dims, b, s, dims.kv_heads, hk, dims.v_dim);
        std::fill(dk_row, dk_row + dims.qk_dim, T(0));
        std::fill(dv_row, dv_row + dims.v_dim, T(0));
      }
      for (int64_t h = hk * group; h < (hk + 1) * group; ++h) {
        for (int64_t t = 0; t < dims.time; ++t) {
          const T* q_row = q + row_offset(dims, b, t, dims.q_heads, h, dims.qk_dim);
          const T* do_row = d_out + row_offset(dims, b, t, dims.q_heads, h, dims.v_dim);
          const T row_lse = lse[(b * dims.q_heads + h) * dims.time + t];
          // rowsum(P * dP) = <dO_t, O_t> (KERNELS.md section 8).
          const T row_delta =
              dot(do_row, out + row_offset(dims, b, t, dims.q_heads, h, dims.v_dim), dims.v_dim);
          T* dq_row = d_q + row_offset(dims, b, t, dims.q_heads, h, dims.qk_dim);
          std::fill(dq_row, dq_row + dims.qk_dim, T(0));
          for_each_visible_key(t, mask, [&](int64_t s) {
            const int64_t k_offset = row_offset(dims, b, s, dims.kv_heads, hk, dims.qk_dim);
            const int64_t v_offset = row_offset(dims, b, s, dims.kv_heads, hk, dims.v_dim);
            T p = std::exp(scale * dot(q_row, k + k_offset, dims.qk_dim) - row_lse);
            T dp = dot(do_row, v + v_offset, dims.v_dim);
            T ds = p * (dp - row_delta);
            axpy(scale * ds, k + k_offset, dq_row, dims.qk_dim);
            axpy(scale * ds, q_row, d_k + k_offset, dims.qk_dim);
            axpy(p, do_row, d_v + v_offset, dims.v_dim);
          });
        }
      }
    }
  }
}

template void attention_forward<float>(const float*, const float*, const float*, float*, float*,
                                       const AttentionDims&, const AttentionMask&, float);
template void attention_forward<double>(const double*, const double*, const double*, double*,
                                        double*, const AttentionDims&, const AttentionMask&,
                                        double);
template void attention_backward<float>(const float*, const float*, const float*, const float*,
                                        const float*, const float*, float*, float*, float*,
                                        const AttentionDims&, const AttentionMask&, float);
template void attention_backward<double>(const double*, const double*, const double*,
                                         const double*, const double*, const double*, double*,
                                         double*, double*, const AttentionDims&,
                                         const AttentionMask&, double);

}  // namespace braid::kernels::cpu
