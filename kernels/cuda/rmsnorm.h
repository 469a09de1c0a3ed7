// RMSNorm over the last dimension, the CUDA twin of kernels/cpu/rmsnorm.h (MODEL.md section 1):
// y = x * rstd * w, rstd = (mean(x²) + eps)^(-1/2); x, residual, sum, y (rows, dim) and their
// gradients are activations in `dtype` (f32 or bf16); weight (dim), its gradient and rstd (rows)
// are f32. The kernels compute in fp32 and round once when they store.
// Strategy: rmsnorm.cu holds a "segment norm" engine shared with group_norm.cu and gated_rmsnorm.cu:
// one team (a warp for segments of <= 512 elements, else a block) per row or group, the segment held
// in registers with 16-byte vector loads (scalar when the width or alignment forbids); the backward
// runs a persistent grid whose teams keep parameter-gradient partials in registers, then a
// fixed-order second pass adds the partials (deterministic, no atomics).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "runtime/dtype.h"

namespace braid::kernels::cuda {

void rmsnorm_forward(const void* x, const float* weight, void* y, float* rstd, int64_t rows,
                     int64_t dim, float eps, DType dtype, cudaStream_t stream);

// sum = x + residual (rounded to dtype, the new residual stream); y = rmsnorm(sum) of that rounded
// sum; rstd as above.
void add_rmsnorm_forward(const void* x, const void* residual, const float* weight, void* sum,
                         void* y, float* rstd, int64_t rows, int64_t dim, float eps, DType dtype,
                         cudaStream_t stream);

// Scratch floats rmsnorm_backward needs (the per-team partial sums of d_weight).
size_t rmsnorm_workspace_floats(int64_t rows, int64_t dim, DType dtype);

// With g = d_y * w:  d_x = rstd * g - rstd³ * x * mean(g * x)  (+ d_x_direct),
//                    d_weight = sum over rows of d_y * x * rstd.
// x is the normalized input (x, or `sum` for add_rmsnorm); x, d_y, d_x_direct (may be null) and d_x
// are in `dtype`, d_weight f32. d_x and d_weight are written fresh.
void rmsnorm_backward(const void* x, const float* weight, const float* rstd, const void* d_y,
                      const void* d_x_direct, void* d_x, float* d_weight, int64_t rows,
                      int64_t dim, DType dtype, float* workspace, cudaStream_t stream);

// ---- The segment-norm engine (used by rmsnorm, gated_rmsnorm and group_norm) ----
// Data and their gradients are (rows, groups * group_size) in `dtype`; each row's `groups`
// contiguous groups are the segments, normalized independently; statistics are (rows, groups) f32;
// weight and bias (groups * group_size) and their gradients f32. Kinds (forward):
//   rms:       v = a;                            out = v * r * w
//   add_rms:   v = round(a + b), stored to sum;   out = v * r * w
//   gated_rms: v = a * SiLU(b);                  out = v * r * w
//   group:     v = a, mu = mean(v);              out = (v - mu) * r * w + bias,  mean saved
// with r = (mean((v - mu)²) + eps)^(-1/2) (mu = 0 except for group). The rows of b may lie
// b_row_stride elements apart (0: contiguous like a), e.g. a gate sliced from a wider projection.
enum class SegmentNorm { rms, add_rms, gated_rms, group };

void segment_norm_forward(SegmentNorm kind, const void* a, const void* b, const float* weight,
                          const float* bias, void* sum, void* out, float* mean, float* rstd,
                          int64_t rows, int64_t groups, int64_t group_size, float eps, DType dtype,
                          cudaStream_t stream, int64_t b_row_stride = 0);

// Scratch floats segment_norm_backward needs for these sizes (any pointer alignment).
size_t segment_norm_workspace_floats(SegmentNorm kind, int64_t rows, int64_t groups,
                                     int64_t group_size, DType dtype);

// Backward of rms (add_rms uses it with d_direct = the gradient of sum), gated_rms and group (see
// the CPU twins for the formulas). d_a = gradient of a (x or y); d_b = gradient of z (gated_rms);
// d_bias only for group. d_out, d_direct (rms, may be null), d_a and d_b in `dtype`; d_weight and
// d_bias f32. d_a, d_b, d_weight and d_bias are written fresh.
void segment_norm_backward(SegmentNorm kind, const void* a, const void* b, const float* weight,
                           const float* mean, const float* rstd, const void* d_out,
                           const void* d_direct, void* d_a, void* d_b, float* d_weight,
                           float* d_bias, int64_t rows, int64_t groups, int64_t group_size,
                           DType dtype, float* workspace, cudaStream_t stream);

}  // namespace braid::kernels::cuda
