// Fused AdamW over every parameter in one launch (MODEL.md section 8), the CUDA twin of
// kernels/cpu/adamw.h: the same update, with the same scalars formed in double and rounded to f32
// once, on fp32 master weights and fp32 moments; gradient clipping is folded in as a scale on g.
// Multi-tensor launch: a device table lists the tensors, and a second table gives each block its
// (tensor, chunk) of kAdamwChunkElements elements; threads stride over the chunk with 16-byte
// vector accesses when all four arrays are 16-byte aligned (scalar accesses otherwise).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "runtime/dtype.h"

namespace braid::kernels::cuda {

// One parameter tensor: numel contiguous f32 elements of each array, all on the current device.
struct AdamwTensor {
  float* param;
  const float* grad;
  float* m;
  float* v;
  int64_t numel;
  int32_t decay;  // nonzero: decoupled weight decay applies (matrices)
  int32_t unused = 0;
};

// Block b of the launch updates elements [chunk * kAdamwChunkElements, ... + kAdamwChunkElements)
// of tensor `tensor` (clipped to its numel). A tensor of n elements needs ceil(n / chunk) entries.
struct AdamwChunk {
  int32_t tensor;
  int32_t chunk;
};
constexpr int64_t kAdamwChunkElements = 32768;

// The step's scalars, rounded to f32 the way kernels/cpu/adamw.cpp rounds them.
struct AdamwScalars {
  float decay;          // 1 - lr * weight_decay, for tensors with decay set (others use 1)
  float step_size;      // lr / (1 - beta1^step)
  float v_correction;   // 1 / (1 - beta2^step)
  float beta1, beta2, one_minus_beta1, one_minus_beta2, eps;
  float grad_scale;     // clip factor applied to every gradient element first (1: no clipping)
};

// Checks step >= 1 and the betas as the CPU twin does, and forms the scalars.
AdamwScalars adamw_scalars(double lr, double beta1, double beta2, double eps,
                           double weight_decay, int64_t step, double grad_scale);

// For every element of every listed tensor, with g = grad * grad_scale:
//   m = beta1 m + (1 - beta1) g;  v = beta2 v + (1 - beta2) g²;
//   p = p * decay - step_size * m / (sqrt(v * v_correction) + eps)
// tensors and chunks are device arrays; one launch of num_chunks blocks.
void adamw_step(const AdamwTensor* tensors, const AdamwChunk* chunks, int64_t num_chunks,
                const AdamwScalars& scalars, cudaStream_t stream);

}  // namespace braid::kernels::cuda
