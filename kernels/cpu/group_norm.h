// GroupNorm over the last dimension with a per-channel affine (MODEL.md section 4: the intra-hybrid's
// per-branch norm, one group per head). x is (rows, C), C = groups * group_size; per row and group:
//   y = (x - mean) * rstd * weight + bias,   rstd = (var + eps)^(-1/2),   var biased.
// mean and rstd are saved per (row, group) for the backward.
#pragma once

#include <cstdint>

namespace braid::kernels::cpu {

// x, out: (rows, C); weight, bias: (C); mean, rstd: (rows, groups).
template <typename T>
void group_norm_forward(const T* x, const T* weight, const T* bias, T* out, T* mean, T* rstd,
                        int64_t rows, int64_t groups, int64_t group_size, double eps);

// With x_hat = (x - mean) * rstd and g = d_out * weight, per row and group:
//   d_x = rstd * (g - mean(g) - x_hat * mean(g * x_hat))
//   d_weight = sum over rows of d_out * x_hat;   d_bias = sum over rows of d_out  (fixed row order).
template <typename T>
void group_norm_backward(const T* x, const T* weight, const T* mean, const T* rstd, const T* d_out,
                         T* d_x, T* d_weight, T* d_bias, int64_t rows, int64_t groups,
                         int64_t group_size);

}  // namespace braid::kernels::cpu
