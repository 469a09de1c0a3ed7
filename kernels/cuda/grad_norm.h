// Global L2 norm of all gradients (MODEL.md section 8: clipping at the global norm), the CUDA twin of
// kernels/cpu/elementwise.h's sum_of_squares taken over every gradient at once. Multi-tensor launch
// as in kernels/cuda/adamw.h: block b squares and sums chunk b (kGradNormChunkElements elements of
// one tensor) in double into a partial; a second one-block pass adds the partials in index order, so
// the result is the same on every run.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

#include "runtime/dtype.h"

namespace braid::kernels::cuda {

// numel contiguous f32 elements on the current device.
struct GradNormTensor {
  const float* data;
  int64_t numel;
};

// Block b sums elements [chunk * kGradNormChunkElements, ... + kGradNormChunkElements) of tensor
// `tensor` (clipped to its numel). A tensor of n elements needs ceil(n / chunk) entries.
struct GradNormChunk {
  int32_t tensor;
  int32_t chunk;
};
constexpr int64_t kGradNormChunkElements = 32768;

// Doubles of scratch grad_norm_squared needs: one partial per chunk.
inline size_t grad_norm_workspace_doubles(int64_t num_chunks) { return size_t(num_chunks); }

// *result (device f64) = sum over every listed element of double(x)², NaN or Inf when any element
// is. tensors and chunks are device arrays; workspace holds grad_norm_workspace_doubles(num_chunks).
void grad_norm_squared(const GradNormTensor* tensors, const GradNormChunk* chunks,
                       int64_t num_chunks, double* workspace, double* result,
                       cudaStream_t stream);

}  // namespace braid::kernels::cuda
