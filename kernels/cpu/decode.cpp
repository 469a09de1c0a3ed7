#include "kernels/cpu/decode.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "kernels/cpu/activations.h"

namespace braid::kernels::cpu {

template <typename T>
void cache_attention(const T* q, const T* k_cache, const T* v_cache, const int32_t* lengths, T* out,
                     const CacheAttentionDims& dims, const AttentionMask& mask, double scale) {
  const int64_t Tq = dims.queries, Hq = dims.q_heads, Hk = dims.kv_heads, Dk = dims.qk_dim,
                Dv = dims.v_dim, S = dims.capacity, group = Hq / Hk;
#pragma omp parallel for collapse(2) schedule(static)
  for (int64_t b = 0; b < dims.batch; ++b) {
    for (int64_t h = 0; h < Hq; ++h) {
      const int64_t length = lengths[b], kv = h / group;
      const T* keys = k_cache + (b * Hk + kv) * S * Dk;
      const T* values = v_cache + (b * Hk + kv) * S * Dv;
      std::vector<double> score(static_cast<size_t>(length)), acc(static_cast<size_t>(Dv));
      for (int64_t t = 0; t < Tq; ++t) {
        const int64_t slot = length - Tq + t;
        const T* qt = q + ((b * Tq + t) * Hq + h) * Dk;
        // Two passes as the training kernel: the row maximum, then exp-sum and P V.
        double top = -INFINITY;
        for (int64_t s = 0; s <= slot; ++s) {
          if (!attention_key_visible(slot, s, mask)) continue;
          double dot = 0;
          for (int64_t i = 0; i < Dk; ++i) dot += double(qt[i]) * double(keys[s * Dk + i]);
          score[size_t(s)] = scale * dot;
          top = std::max(top, score[size_t(s)]);
        }
        std::fill(acc.begin(), acc.end(), 0.0);
        double total = 0;
        for (int64_t s = 0; s <= slot; ++s) {
          if (!attention_key_visible(slot, s, mask)) continue;
          const double p = std::exp(score[size_t(s)] - top);
          total += p;
          for (int64_t i = 0; i < Dv; ++i) acc[size_t(i)] += p * double(values[s * Dv + i]);
        }
        T* o = out + ((b * Tq + t) * Hq + h) * Dv;
        for (int64_t i = 0; i < Dv; ++i) o[i] = T(acc[size_t(i)] / total);
      }
    }
  }
}

template <typename T>
void kv_cache_write(T* cache, const T* values, const int32_t* slots, int64_t batch, int64_t time,
                    int64_t heads, int64_t capacity, int64_t dim) {
  for (int64_t b = 0; b < batch; ++b)
    for (int64_t t = 0; t < time; ++t) {
      const int64_t slot = slots[b * time + t];
      if (slot < 0) continue;
      for (int64_t h = 0; h < heads; ++h)
        std::copy_n(values + ((b * time + t) * heads + h) * dim, dim,
                    cache + ((b * heads + h) * capacity + slot) * dim);
    }
}

template <typename T>
void rope_at_positions(const T* x, T* out, const double* inverse_frequencies, const int32_t* positions,
                       int64_t batch, int64_t time, int64_t heads, int64_t head_dim) {
  const int64_t half = head_dim / 2;
  for (int64_t b = 0; b < batch; ++b)
    for (int64_t t = 0; t < time; ++t) {
      const double position = double(positions[b] + t);
      for (int64_t i = 0; i < half; ++i) {
        const double angle = position * inverse_frequencies[i];
        const T c = T(std::cos(angle)), s = T(std::sin(angle));
        for (int64_t h = 0; h < heads; ++h) {
          const int64_t row = ((b * time + t) * heads + h) * head_dim;
          const T a = x[row + i], r = x[row + i + half];
          out[row + i] = a * c - r * s;
          out[row + i + half] = r * c + a * s;
        }
      }
    }
}

template <typename T>
void conv_state_update(T* state, const T* x, int64_t x_row_stride, const T* weight, const T* bias, T* out,
                       int64_t batch, int64_t channels, int64_t width, bool apply_silu) {
  const int64_t kept = width - 1;
  for (int64_t b = 0; b < batch; ++b)
    for (int64_t c = 0; c < channels; ++c) {
      T* st = state + (b * channels + c) * kept;
      const T* w = weight + c * width;
      const T xt = x[b * x_row_stride + c];
      T v = bias[c];
      for (int64_t k = 0; k < kept; ++k) v += w[k] * st[k];
      v += w[kept] * xt;
      out[b * channels + c] = apply_silu ? silu(v) : v;
      for (int64_t k = 0; k + 1 < kept; ++k) st[k] = st[k + 1];
      if (kept > 0) st[kept - 1] = xt;
    }
}

template <typename T>
void ssm_state_update(T* state, const T* x, const T* dt_raw, const T* dt_bias, const T* A_log,
                      const T* B, const T* C, const T* D, T* y, const SsmStepDims& dims) {
  const int64_t H = dims.heads, P = dims.head_dim, G = dims.groups, N = dims.state;
  const int64_t heads_per_group = H / G;
#pragma omp parallel for collapse(2) schedule(static)
  for (int64_t b = 0; b < dims.batch; ++b)
    for (int64_t h = 0; h < H; ++h) {
      const T delta = std::clamp(softplus(dt_raw[b * dims.dt_row_stride + h] + dt_bias[h]), T(dims.dt_min),
                                 T(dims.dt_max));
      const T alpha = std::exp(delta * -std::exp(A_log[h]));
      const T* Bg = B + b * dims.B_row_stride + h / heads_per_group * N;
      const T* Cg = C + b * dims.C_row_stride + h / heads_per_group * N;
      for (int64_t p = 0; p < P; ++p) {
        const T xp = x[b * dims.x_row_stride + h * P + p];
        T* s = state + ((b * H + h) * P + p) * N;
        T dot = 0;
        for (int64_t n = 0; n < N; ++n) {
          s[n] = alpha * s[n] + delta * xp * Bg[n];
          dot += s[n] * Cg[n];
        }
        y[(b * H + h) * P + p] = dot + D[h] * xp;
      }
    }
}

#define BRAID_DECODE_INSTANTIATE(T)                                                                   \
  template void cache_attention<T>(const T*, const T*, const T*, const int32_t*, T*,                   \
                                   const CacheAttentionDims&, const AttentionMask&, double);           \
  template void kv_cache_write<T>(T*, const T*, const int32_t*, int64_t, int64_t, int64_t, int64_t,    \
                                  int64_t);                                                            \
  template void rope_at_positions<T>(const T*, T*, const double*, const int32_t*, int64_t, int64_t,    \
                                     int64_t, int64_t);                                                \
  template void conv_state_update<T>(T*, const T*, int64_t, const T*, const T*, T*, int64_t, int64_t,  \
                                     int64_t, bool);                                                   \
  template void ssm_state_update<T>(T*, const T*, const T*, const T*, const T*, const T*, const T*,    \
                                    const T*, T*, const SsmStepDims&);
BRAID_DECODE_INSTANTIATE(float)
BRAID_DECODE_INSTANTIATE(double)
#undef BRAID_DECODE_INSTANTIATE

}  // namespace braid::kernels::cpu
