#include "kernels/cpu/gated_rmsnorm.h"

#include <algorithm>
#include <cmath>

#include "kernels/cpu/activations.h"

namespace braid::kernels::cpu {

namespace {

// Statistics and reductions accumulate in double so the f32 path only rounds inputs and outputs.
using Acc = double;

// Channels per task of the d_weight reduction: each task sums its channels over all rows in row
// order, so the result does not depend on the thread count.
constexpr int64_t kChannelBlock = 64;

}  // namespace

template <typename T>
void gated_rmsnorm_forward(const T* y, const T* z, const T* weight, T* out, T* rstd, int64_t rows,
                           int64_t groups, int64_t group_size, double eps, int64_t z_row_stride) {
  const int64_t channels = groups * group_size;
  const int64_t z_stride = z_row_stride > 0 ? z_row_stride : channels;
#pragma omp parallel for schedule(static)
  for (int64_t row = 0; row < rows; ++row) {
    for (int64_t g = 0; g < groups; ++g) {
      const int64_t first = row * channels + g * group_size;
      const T* gate = z + row * z_stride + g * group_size;
      Acc squares = 0;
      for (int64_t k = 0; k < group_size; ++k) {
        const Acc v = Acc(y[first + k]) * silu(Acc(gate[k]));
        squares += v * v;
      }
      const Acc r = Acc(1) / std::sqrt(squares / Acc(group_size) + Acc(eps));
      for (int64_t k = 0; k < group_size; ++k) {
        const Acc v = Acc(y[first + k]) * silu(Acc(gate[k]));
        out[first + k] = T(v * r * Acc(weight[g * group_size + k]));
      }
      rstd[row * groups + g] = T(r);
    }
  }
}

template <typename T>
void gated_rmsnorm_backward(const T* y, const T* z, const T* weight, const T* rstd, const T* d_out,
                            T* d_y, T* d_z, T* d_weight, int64_t rows, int64_t groups,
                            int64_t group_size) {
  const int64_t channels = groups * group_size;
#pragma omp parallel for schedule(static)
  for (int64_t row = 0; row < rows; ++row) {
    for (int64_t g = 0; g < groups; ++g) {
      const int64_t first = row * channels + g * group_size;
      const Acc r = rstd[row * groups + g];
      Acc sum_vhat_gw = 0;
      for (int64_t k = 0; k < group_size; ++k) {
        const Acc v_hat = Acc(y[first + k]) * silu(Acc(z[first + k])) * r;
        sum_vhat_gw += v_hat * Acc(d_out[first + k]) * Acc(weight[g * group_size + k]);
      }
      const Acc c1 = sum_vhat_gw / Acc(group_size);
      for (int64_t k = 0; k < group_size; ++k) {
        const Acc y_k = y[first + k], z_k = z[first + k];
        const Acc gate = silu(z_k);
        const Acc gw = Acc(d_out[first + k]) * Acc(weight[g * group_size + k]);
        const Acc dv = r * (gw - y_k * gate * r * c1);
        d_y[first + k] = T(dv * gate);
        d_z[first + k] = T(dv * y_k * silu_grad(z_k));
      }
    }
  }

  const int64_t blocks = (channels + kChannelBlock - 1) / kChannelBlock;
#pragma omp parallel for schedule(static)
  for (int64_t block = 0; block < blocks; ++block) {
    const int64_t begin = block * kChannelBlock, end = std::min(channels, begin + kChannelBlock);
    Acc sum[kChannelBlock] = {};
    for (int64_t row = 0; row < rows; ++row) {
      for (int64_t c = begin; c < end; ++c) {
        const int64_t i = row * channels + c;
        const Acc v_hat = Acc(y[i]) * silu(Acc(z[i])) * Acc(rstd[row * groups + c / group_size]);
        sum[c - begin] += Acc(d_out[i]) * v_hat;
      }
    }
    for (int64_t c = begin; c < end; ++c) d_weight[c] = T(sum[c - begin]);
  }
}

template void gated_rmsnorm_forward<float>(const float*, const float*, const float*, float*, float*,
                                           int64_t, int64_t, int64_t, double, int64_t);
template void gated_rmsnorm_forward<double>(const double*, const double*, const double*, double*,
                                            double*, int64_t, int64_t, int64_t, double, int64_t);
template void gated_rmsnorm_backward<float>(const float*, const float*, const float*, const float*,
                                            const float*, float*, float*, float*, int64_t, int64_t,
                                            int64_t);
template void gated_rmsnorm_backward<double>(const double*, const double*, const double*,
                                             const double*, const double*, double*, double*, double*,
                                             int64_t, int64_t, int64_t);

}  // namespace braid::kernels::cpu
