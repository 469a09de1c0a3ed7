// Gated RMSNorm of the Mamba-2 mixer, gate before the norm (MODEL.md section 3, KERNELS.md 1.2 step 7
// and 1.4). y, z are (rows, C), C = groups * group_size; per row and group of group_size channels:
//   v = y * SiLU(z);   r = (mean v^2 + eps)^(-1/2);   out = v * r * weight      (weight: (C))
// r is saved per (row, group) for the backward.
#pragma once

#include <cstdint>

namespace braid::kernels::cpu {

// y, out: (rows, C); weight: (C); rstd: (rows, groups). z: (rows, C) with rows z_row_stride
// elements apart (0: C, contiguous), so a slice of a wider projection is read in place.
template <typename T>
void gated_rmsnorm_forward(const T* y, const T* z, const T* weight, T* out, T* rstd, int64_t rows,
                           int64_t groups, int64_t group_size, double eps, int64_t z_row_stride = 0);

// KERNELS.md 1.4, with v_hat = v * r and gw = d_out * weight, per row and group:
//   c1 = mean(v_hat * gw);   dv = r * (gw - v_hat * c1)
//   d_y = dv * SiLU(z);   d_z = dv * y * SiLU'(z);   d_weight = sum over rows of d_out * v_hat.
template <typename T>
void gated_rmsnorm_backward(const T* y, const T* z, const T* weight, const T* rstd, const T* d_out,
                            T* d_y, T* d_z, T* d_weight, int64_t rows, int64_t groups,
                            int64_t group_size);

}  // namespace braid::kernels::cpu
