// Rotary position embedding on CUDA, rotate-half / NeoX pairing (MODEL.md section 2), the twin of
// kernels/cpu/rope.h: for x (B, T, H, D), dimension i < D/2 pairs with i + D/2 and the pair rotates
// by angle (position_offset + t) * f_i. As on the CPU, angles, cosines and sines are computed in
// double and rounded to float; the rotation runs in fp32.
// Parallel strategy: a block takes enough consecutive (b, t) rows for ~1024 thread tasks; its
// threads first fill those rows' D/2 cosines and sines in shared memory, then rotate every head's
// pairs, VEC (4, 2 or 1) consecutive pairs per task.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "runtime/dtype.h"

namespace braid::kernels::cuda {

// The kernels take the D/2 inverse frequencies by value, so head_dim / 2 is at most this.
constexpr int64_t kRopeMaxHalfDim = 256;

// x and out: (B, T, H, D) contiguous, of `dtype` (f32 or bf16), on the current device.
// `inverse_frequencies` (D/2 values, see ops::rope_inverse_frequencies) is host memory.
void rope_forward(const void* x, void* out, const double* inverse_frequencies, int64_t batch,
                  int64_t time, int64_t heads, int64_t head_dim, int64_t position_offset,
                  DType dtype, cudaStream_t stream);

// The inverse rotation, on fp32 gradients: d_x = Rᵀ d_out, both (B, T, H, D).
void rope_backward(const float* d_out, float* d_x, const double* inverse_frequencies,
                   int64_t batch, int64_t time, int64_t heads, int64_t head_dim,
                   int64_t position_offset, cudaStream_t stream);

}  // namespace braid::kernels::cuda
