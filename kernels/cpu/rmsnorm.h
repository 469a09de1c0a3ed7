// RMSNorm over the last dimension (MODEL.md section 1): for each row x (dim),
// y = x * rstd * w with rstd = 1 / sqrt(mean(x²) + eps); x, y (rows, dim), w (dim), rstd (rows).
// The fused residual form first forms sum = x + residual, the block's new residual stream, then
// normalizes it.
#pragma once

#include <cstdint>

namespace braid::kernels::cpu {

template <typename T>
void rmsnorm_forward(const T* x, const T* weight, T* y, T* rstd, int64_t rows, int64_t dim, T eps);

// sum = x + residual; y = rmsnorm(sum); rstd as above.
template <typename T>
void add_rmsnorm_forward(const T* x, const T* residual, const T* weight, T* sum, T* y, T* rstd,
                         int64_t rows, int64_t dim, T eps);

// With g = d_y * w:  d_x = rstd * g - rstd³ * x * mean(g * x)  (+ d_x_direct),
//                    d_w = sum over rows of d_y * x * rstd.
// `d_x_direct` (may be null) is a gradient reaching x by another path, added to d_x; the fused
// residual form passes the gradient of `sum` there. d_x and d_w are written fresh; d_w sums rows in
// a fixed order.
template <typename T>
void rmsnorm_backward(const T* x, const T* weight, const T* rstd, const T* d_y, const T* d_x_direct,
                      T* d_x, T* d_weight, int64_t rows, int64_t dim);

}  // namespace braid::kernels::cpu
