// GroupNorm over the last dimension with a per-channel affine, the CUDA twin of
// kernels/cpu/group_norm.h (MODEL.md section 4: the intra-hybrid's per-branch norm, one group per
// head). x, out (rows, C = groups * group_size) and their gradients in `dtype` (f32 or bf16);
// weight, bias (C) and their gradients f32; mean, rstd (rows, groups) f32. Per row and group:
//   y = (x - mean) * rstd * weight + bias,   rstd = (var + eps)^(-1/2),   var biased.
// Strategy: rmsnorm.cu's segment-norm engine in its group mode (one warp per group of <= 512
// elements, the group in registers; two-pass mean/variance in fp32; deterministic parameter
// gradients from per-team partials).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "runtime/dtype.h"

namespace braid::kernels::cuda {

void group_norm_forward(const void* x, const float* weight, const float* bias, void* out,
                        float* mean, float* rstd, int64_t rows, int64_t groups,
                        int64_t group_size, float eps, DType dtype, cudaStream_t stream);

// Scratch floats group_norm_backward needs (per-team partial sums of d_weight and d_bias).
size_t group_norm_workspace_floats(int64_t rows, int64_t groups, int64_t group_size, DType dtype);

// With x_hat = (x - mean) * rstd and g = d_out * weight, per row and group:
//   d_x = rstd * (g - mean(g) - x_hat * mean(g * x_hat))
//   d_weight = sum over rows of d_out * x_hat;   d_bias = sum over rows of d_out.
// d_out, d_x in `dtype`, d_weight, d_bias f32; d_x, d_weight, d_bias written fresh.
void group_norm_backward(const void* x, const float* weight, const float* mean, const float* rstd,
                         const void* d_out, void* d_x, float* d_weight, float* d_bias,
                         int64_t rows, int64_t groups, int64_t group_size, DType dtype,
                         float* workspace, cudaStream_t stream);

}  // namespace braid::kernels::cuda
