// Gated RMSNorm of the Mamba-2 mixer, gate before the norm, the CUDA twin of
// kernels/cpu/gated_rmsnorm.h (MODEL.md section 3, KERNELS.md 1.2 step 7 and 1.4). y, z, out
// (rows, C = groups * group_size) and their gradients in `dtype` (f32 or bf16); weight (C) and its
// gradient f32; rstd (rows, groups) f32. Per row and group:
//   v = y * SiLU(z);   r = (mean v² + eps)^(-1/2);   out = v * r * weight
// Strategy: rmsnorm.cu's segment-norm engine in its gated mode (one team per (row, group), the
// group's y and z in registers; SiLU recomputed in the backward rather than stored).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "runtime/dtype.h"

namespace braid::kernels::cuda {

// z's rows may lie z_row_stride elements apart (0: contiguous), as in the CPU twin.
void gated_rmsnorm_forward(const void* y, const void* z, const float* weight, void* out,
                           float* rstd, int64_t rows, int64_t groups, int64_t group_size,
                           float eps, DType dtype, cudaStream_t stream, int64_t z_row_stride = 0);

// Scratch floats gated_rmsnorm_backward needs (per-team partial sums of d_weight).
size_t gated_rmsnorm_workspace_floats(int64_t rows, int64_t groups, int64_t group_size,
                                      DType dtype);

// KERNELS.md 1.4, with v_hat = v * r and gw = d_out * weight, per row and group:
//   c1 = mean(v_hat * gw);   dv = r * (gw - v_hat * c1)
//   d_y = dv * SiLU(z);   d_z = dv * y * SiLU'(z);   d_weight = sum over rows of d_out * v_hat.
// d_out, d_y, d_z in `dtype`, d_weight f32; d_y, d_z, d_weight written fresh.
void gated_rmsnorm_backward(const void* y, const void* z, const float* weight, const float* rstd,
                            const void* d_out, void* d_y, void* d_z, float* d_weight,
                            int64_t rows, int64_t groups, int64_t group_size, DType dtype,
                            float* workspace, cudaStream_t stream);

}  // namespace braid::kernels::cuda
