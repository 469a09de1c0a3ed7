// Gates of the intra-hybrid block's scaling options, the CUDA twin of kernels/cpu/gating.h
// (MODEL.md section 4): a sigmoid, and the product of a tensor with one learnable scalar.
// x, out: n activations in `dtype` (f32 or bf16); the scalar (a parameter) and all gradients f32.
// Strategy: grid-stride loops over 16-byte vectors (scalar tail / unaligned fallback); d_scalar is
// reduced deterministically (fixed per-block partials, then one block adds them in order).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "runtime/dtype.h"

namespace braid::kernels::cuda {

void sigmoid_forward(const void* x, void* out, int64_t n, DType dtype, cudaStream_t stream);

// d_x = d_out * s * (1 - s) with s = sigmoid(x) recomputed in fp32 from the INPUT x (the CPU twin
// reads the saved output instead; in bf16 the rounded output would cost 1 - s most of its
// precision where s is near 1).
void sigmoid_backward(const void* x, const float* d_out, float* d_x, int64_t n, DType dtype,
                      cudaStream_t stream);

// out = x * scalar[0], `scalar` one float in device memory (no host round trip).
void mul_scalar_forward(const void* x, const float* scalar, void* out, int64_t n, DType dtype,
                        cudaStream_t stream);

// Scratch floats mul_scalar_backward needs for n elements.
size_t mul_scalar_workspace_floats(int64_t n);

// d_x = d_out * scalar;  d_scalar[0] = sum(d_out * x), reduced in a fixed order.
void mul_scalar_backward(const void* x, const float* scalar, const float* d_out, float* d_x,
                         float* d_scalar, int64_t n, DType dtype, float* workspace,
                         cudaStream_t stream);

}  // namespace braid::kernels::cuda
