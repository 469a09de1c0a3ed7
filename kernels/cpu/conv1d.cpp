#include "kernels/cpu/conv1d.h"

#include <algorithm>
#include <vector>

#include "kernels/cpu/activations.h"

namespace braid::kernels::cpu {

namespace {

// Sums accumulate in double so the f32 path only rounds inputs and outputs.
using Acc = double;

// Channels per task of the d_weight / d_bias reduction: each task sums its channels over (b, t) in
// a fixed order, so the result does not depend on the thread count.
constexpr int64_t kChannelBlock = 64;

// The padded input sequence: time s in [-(W-1), T) reads x for s >= 0, else the initial state.
template <typename T>
struct PaddedInput {
  const T* x;
  const T* initial_state;  // null: zeros before t = 0
  int64_t length, channels, width;

  Acc at(int64_t b, int64_t s, int64_t c) const {
    if (s >= 0) return x[(b * length + s) * channels + c];
    if (initial_state == nullptr) return 0;
    return initial_state[(b * channels + c) * (width - 1) + (width - 1) + s];
  }

  Acc pre_activation(const T* weight, const T* bias, int64_t b, int64_t t, int64_t c) const {
    Acc v = bias[c];
    for (int64_t k = 0; k < width; ++k) v += Acc(weight[c * width + k]) * at(b, t - (width - 1) + k, c);
    return v;
  }
};

}  // namespace

template <typename T>
void causal_conv1d_forward(const T* x, const T* weight, const T* bias, const T* initial_state,
                           T* out, T* final_state, int64_t batch, int64_t length, int64_t channels,
                           int64_t width, bool apply_silu) {
  const PaddedInput<T> input{x, initial_state, length, channels, width};
#pragma omp parallel for schedule(static)
  for (int64_t bt = 0; bt < batch * length; ++bt) {
    const int64_t b = bt / length, t = bt % length;
    for (int64_t c = 0; c < channels; ++c) {
      const Acc v = input.pre_activation(weight, bias, b, t, c);
      out[bt * channels + c] = T(apply_silu ? silu(v) : v);
    }
  }
  const int64_t state = width - 1;
  for (int64_t b = 0; b < batch; ++b)
    for (int64_t c = 0; c < channels; ++c)
      for (int64_t m = 0; m < state; ++m)
        final_state[(b * channels + c) * state + m] = T(input.at(b, length - state + m, c));
}

template <typename T>
void causal_conv1d_backward(const T* x, const T* weight, const T* bias, const T* initial_state,
                            const T* d_out, const T* d_final_state, T* d_x, T* d_weight, T* d_bias,
                            T* d_initial_state, int64_t batch, int64_t length, int64_t channels,
                            int64_t width, bool apply_silu) {
  const PaddedInput<T> input{x, initial_state, length, channels, width};
  const int64_t state = width - 1;

  // g = dL/dv, kept in double for the two reductions below.
  std::vector<Acc> g(size_t(batch * length * channels));
#pragma omp parallel for schedule(static)
  for (int64_t bt = 0; bt < batch * length; ++bt) {
    const int64_t b = bt / length, t = bt % length;
    for (int64_t c = 0; c < channels; ++c) {
      const Acc d = d_out[bt * channels + c];
      g[bt * channels + c] = apply_silu ? d * silu_grad(input.pre_activation(weight, bias, b, t, c)) : d;
    }
  }

  // Input gradients per padded time q in [-(W-1), T); q < 0 is the initial state.
  const int64_t first_q = d_initial_state ? -state : 0;
  const int64_t span = length - first_q;
#pragma omp parallel for schedule(static)
  for (int64_t bq = 0; bq < batch * span; ++bq) {
    const int64_t b = bq / span, q = bq % span + first_q;
    for (int64_t c = 0; c < channels; ++c) {
      Acc sum = 0;
      for (int64_t k = 0; k < width; ++k) {
        const int64_t t = q + state - k;
        if (t >= 0 && t < length) sum += Acc(weight[c * width + k]) * g[(b * length + t) * channels + c];
      }
      if (q >= 0) d_x[(b * length + q) * channels + c] = T(sum);
      else d_initial_state[(b * channels + c) * state + state + q] = T(sum);
    }
  }
  if (d_final_state) {
    // The final state copies the inputs at q = T-(W-1)+m; each sequence b owns its rows.
#pragma omp parallel for schedule(static)
    for (int64_t b = 0; b < batch; ++b) {
      for (int64_t c = 0; c < channels; ++c) {
        for (int64_t m = 0; m < state; ++m) {
          const T d = d_final_state[(b * channels + c) * state + m];
          const int64_t q = length - state + m;
          if (q >= 0) d_x[(b * length + q) * channels + c] += d;
          else if (d_initial_state) d_initial_state[(b * channels + c) * state + state + q] += d;
        }
      }
    }
  }

  const int64_t blocks = (channels + kChannelBlock - 1) / kChannelBlock;
#pragma omp parallel for schedule(static)
  for (int64_t block = 0; block < blocks; ++block) {
    const int64_t begin = block * kChannelBlock, end = std::min(channels, begin + kChannelBlock);
    std::vector<Acc> sum_weight(size_t((end - begin) * width), 0.0), sum_bias(size_t(end - begin), 0.0);
    for (int64_t b = 0; b < batch; ++b) {
      for (int64_t t = 0; t < length; ++t) {
        for (int64_t c = begin; c < end; ++c) {
          const Acc grad = g[(b * length + t) * channels + c];
          sum_bias[c - begin] += grad;
          for (int64_t k = 0; k < width; ++k)
            sum_weight[(c - begin) * width + k] += input.at(b, t - state + k, c) * grad;
        }
      }
    }
    for (int64_t c = begin; c < end; ++c) {
      d_bias[c] = T(sum_bias[c - begin]);
      for (int64_t k = 0; k < width; ++k) d_weight[c * width + k] = T(sum_weight[(c - begin) * width + k]);
    }
  }
}

template void causal_conv1d_forward<float>(const float*, const float*, const float*, const float*,
                                           float*, float*, int64_t, int64_t, int64_t, int64_t, bool);
template void causal_conv1d_forward<double>(const double*, const double*, const double*,
                                            const double*, double*, double*, int64_t, int64_t,
                                            int64_t, int64_t, bool);
template void causal_conv1d_backward<float>(const float*, const float*, const float*, const float*,
                                            const float*, const float*, float*, float*, float*,
                                            float*, int64_t, int64_t, int64_t, int64_t, bool);
template void causal_conv1d_backward<double>(const double*, const double*, const double*,
                                             const double*, const double*, const double*, double*,
                                             double*, double*, double*, int64_t, int64_t, int64_t,
                                             int64_t, bool);

}  // namespace braid::kernels::cpu
