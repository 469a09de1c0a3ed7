// Elementwise and reduction kernels on flat device arrays of n elements, the CUDA twin of
// kernels/cpu/elementwise.h: residual adds, branch mixing, per-channel scaling and their gradients,
// plus gradient accumulation for autograd. Every operand names its own dtype (f32 or bf16), so a
// backward pass can multiply an f32 gradient by a bf16 activation without a conversion pass.
// Arithmetic is fp32; grid-stride loops, one element per thread per step.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "runtime/dtype.h"

namespace braid::kernels::cuda {

enum class BinaryOp { add, sub, mul };

// out = a (op) b elementwise. `out` may alias `a` or `b` (in-place accumulation).
void binary(BinaryOp op, const void* a, DType a_dtype, const void* b, DType b_dtype, void* out,
            DType out_dtype, int64_t n, cudaStream_t stream);

// out = factor * a.
void scale(const void* a, DType a_dtype, float factor, void* out, DType out_dtype, int64_t n,
           cudaStream_t stream);

// out[i] = factor * scalar[0] for i < n, with `scalar` a single float in device memory (the
// gradient of a sum, broadcast without a host round trip).
void broadcast_scalar(const float* scalar, float factor, void* out, DType out_dtype, int64_t n,
                      cudaStream_t stream);

// Scratch floats sum() needs for n elements.
int64_t sum_workspace_floats(int64_t n);
// out[0] = factor * sum of a's n elements, written in out_dtype. Two passes (fixed per-block
// partials, then one block adding them in order), so the result is the same on every run.
void sum(const void* a, DType a_dtype, float factor, void* out, DType out_dtype, int64_t n,
         float* workspace, cudaStream_t stream);

// out (rows, C) = x (rows, C) * v (C); v is fp32 (a parameter).
void mul_broadcast_last_forward(const void* x, const float* v, void* out, int64_t rows,
                                int64_t channels, DType dtype, cudaStream_t stream);

// Scratch floats mul_broadcast_last_backward needs.
int64_t mul_broadcast_last_workspace_floats(int64_t rows, int64_t channels);
// d_x = d_out * v (fp32);  d_v[c] = sum over rows of d_out[r, c] * x[r, c], reduced over fixed row
// tiles and then in tile order.
void mul_broadcast_last_backward(const void* x, const float* v, const float* d_out, float* d_x,
                                 float* d_v, int64_t rows, int64_t channels, DType dtype,
                                 float* workspace, cudaStream_t stream);

}  // namespace braid::kernels::cuda
