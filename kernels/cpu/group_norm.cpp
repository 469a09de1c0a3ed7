#include "kernels/cpu/group_norm.h"

#include <algorithm>
#include <cmath>

namespace braid::kernels::cpu {

namespace {

// Statistics and reductions accumulate in double so the f32 path only rounds inputs and outputs.
using Acc = double;

// Channels per task of the column reductions: each task sums its channels over all rows in row
// order, so the result does not depend on the thread count.
constexpr int64_t kChannelBlock = 64;

}  // namespace

template <typename T>
void group_norm_forward(const T* x, const T* weight, const T* bias, T* out, T* mean, T* rstd,
                        int64_t rows, int64_t groups, int64_t group_size, double eps) {
  const int64_t channels = groups * group_size;
#pragma omp parallel for schedule(static)
  for (int64_t row = 0; row < rows; ++row) {
    for (int64_t g = 0; g < groups; ++g) {
      const int64_t first = row * channels + g * group_size;
      Acc sum = 0;
      for (int64_t k = 0; k < group_size; ++k) sum += Acc(x[first + k]);
      const Acc mu = sum / Acc(group_size);
      // Two passes: the centered sum of squares does not cancel catastrophically.
      Acc squares = 0;
      for (int64_t k = 0; k < group_size; ++k) {
        const Acc centered = Acc(x[first + k]) - mu;
        squares += centered * centered;
      }
      const Acc inv_std = Acc(1) / std::sqrt(squares / Acc(group_size) + Acc(eps));
      for (int64_t k = 0; k < group_size; ++k) {
        const int64_t c = g * group_size + k;
        out[first + k] = T((Acc(x[first + k]) - mu) * inv_std * Acc(weight[c]) + Acc(bias[c]));
      }
      mean[row * groups + g] = T(mu);
      rstd[row * groups + g] = T(inv_std);
    }
  }
}

template <typename T>
void group_norm_backward(const T* x, const T* weight, const T* mean, const T* rstd, const T* d_out,
                         T* d_x, T* d_weight, T* d_bias, int64_t rows, int64_t groups,
                         int64_t group_size) {
  const int64_t channels = groups * group_size;
#pragma omp parallel for schedule(static)
  for (int64_t row = 0; row < rows; ++row) {
    for (int64_t g = 0; g < groups; ++g) {
      const int64_t first = row * channels + g * group_size;
      const Acc mu = mean[row * groups + g], inv_std = rstd[row * groups + g];
      Acc sum_g = 0, sum_g_xhat = 0;
      for (int64_t k = 0; k < group_size; ++k) {
        const Acc grad = Acc(d_out[first + k]) * Acc(weight[g * group_size + k]);
        sum_g += grad;
        sum_g_xhat += grad * (Acc(x[first + k]) - mu) * inv_std;
      }
      const Acc mean_g = sum_g / Acc(group_size), mean_g_xhat = sum_g_xhat / Acc(group_size);
      for (int64_t k = 0; k < group_size; ++k) {
        const Acc grad = Acc(d_out[first + k]) * Acc(weight[g * group_size + k]);
        const Acc x_hat = (Acc(x[first + k]) - mu) * inv_std;
        d_x[first + k] = T(inv_std * (grad - mean_g - x_hat * mean_g_xhat));
      }
    }
  }

  const int64_t blocks = (channels + kChannelBlock - 1) / kChannelBlock;
#pragma omp parallel for schedule(static)
  for (int64_t block = 0; block < blocks; ++block) {
    const int64_t begin = block * kChannelBlock, end = std::min(channels, begin + kChannelBlock);
    Acc sum_weight[kChannelBlock] = {}, sum_bias[kChannelBlock] = {};
    for (int64_t row = 0; row < rows; ++row) {
      for (int64_t c = begin; c < end; ++c) {
        const int64_t stat = row * groups + c / group_size;
        const Acc grad = d_out[row * channels + c];
        sum_weight[c - begin] += grad * (Acc(x[row * channels + c]) - Acc(mean[stat])) * Acc(rstd[stat]);
        sum_bias[c - begin] += grad;
      }
    }
    for (int64_t c = begin; c < end; ++c) {
      d_weight[c] = T(sum_weight[c - begin]);
      d_bias[c] = T(sum_bias[c - begin]);
    }
  }
}

template void group_norm_forward<float>(const float*, const float*, const float*, float*, float*,
                                        float*, int64_t, int64_t, int64_t, double);
template void group_norm_forward<double>(const double*, const double*, const double*, double*,
                                         double*, double*, int64_t, int64_t, int64_t, double);
template void group_norm_backward<float>(const float*, const float*, const float*, const float*,
                                         const float*, float*, float*, float*, int64_t, int64_t,
                                         int64_t);
template void group_norm_backward<double>(const double*, const double*, const double*, const double*,
                                          const double*, double*, double*, double*, int64_t, int64_t,
                                          int64_t);

}  // namespace braid::kernels::cpu
