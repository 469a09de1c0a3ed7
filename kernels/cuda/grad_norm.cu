#include "kernels/cuda/grad_norm.h"

#include "kernels/cuda/common.cuh"

namespace braid::kernels::cuda {

namespace {

constexpr int kChunkThreads = 256;
constexpr int kFinalThreads = 1024;

// Sum over the block in double, by a fixed tree over shared memory (blockDim.x == Threads, a power
// of two). Thread 0 gets the total.
template <int Threads>
__device__ __forceinline__ double block_sum_double(double value, double* shared) {
  shared[threadIdx.x] = value;
  __syncthreads();
  for (int stride = Threads / 2; stride > 0; stride >>= 1) {
    if (int(threadIdx.x) < stride) shared[threadIdx.x] += shared[threadIdx.x + stride];
    __syncthreads();
  }
  return shared[0];
}

// Pass 1: the sum of squares of one chunk, in double (each square is exact in double).
__global__ void __launch_bounds__(kChunkThreads)
    chunk_sum_of_squares_kernel(const GradNormTensor* tensors, const GradNormChunk* chunks,
                                double* partials) {
  __shared__ double shared[kChunkThreads];
  const GradNormChunk chunk = chunks[blockIdx.x];
  const GradNormTensor t = tensors[chunk.tensor];
  const int64_t begin = int64_t(chunk.chunk) * kGradNormChunkElements;
  const int64_t count = max(int64_t(0), min(t.numel - begin, kGradNormChunkElements));
  const float* data = t.data + begin;
  double total = 0.0;
  int64_t scalar_from = 0;
  // begin is a multiple of 4, so the chunk is 16-byte aligned when the tensor is.
  if ((reinterpret_cast<uintptr_t>(t.data) & 15) == 0) {
    const int64_t vectors = count / 4;
    for (int64_t i = threadIdx.x; i < vectors; i += kChunkThreads) {
      const float4 x = reinterpret_cast<const float4*>(data)[i];
      total += double(x.x) * double(x.x) + double(x.y) * double(x.y) + double(x.z) * double(x.z) +
               double(x.w) * double(x.w);
    }
    scalar_from = vectors * 4;
  }
  for (int64_t i = scalar_from + threadIdx.x; i < count; i += kChunkThreads)
    total += double(data[i]) * double(data[i]);
  total = block_sum_double<kChunkThreads>(total, shared);
  if (threadIdx.x == 0) partials[blockIdx.x] = total;
}

// Pass 2: one block adds the partials; thread i takes partials i, i + 1024, ... in order.
__global__ void __launch_bounds__(kFinalThreads)
    sum_partials_kernel(const double* partials, int64_t count, double* result) {
  __shared__ double shared[kFinalThreads];
  double total = 0.0;
  for (int64_t i = threadIdx.x; i < count; i += kFinalThreads) total += partials[i];
  total = block_sum_double<kFinalThreads>(total, shared);
  if (threadIdx.x == 0) result[0] = total;
}

}  // namespace

void grad_norm_squared(const GradNormTensor* tensors, const GradNormChunk* chunks,
                       int64_t num_chunks, double* workspace, double* result,
                       cudaStream_t stream) {
  BRAID_CHECK(num_chunks >= 0 && num_chunks <= int64_t(0x7fffffff), "cuda grad_norm_squared: ",
              num_chunks, " chunks");
  if (num_chunks > 0) {
    chunk_sum_of_squares_kernel<<<unsigned(num_chunks), kChunkThreads, 0, stream>>>(tensors, chunks,
                                                                                   workspace);
    CUDA_CHECK_LAST_LAUNCH();
  }
  // With no chunks the second pass writes 0.
  sum_partials_kernel<<<1, kFinalThreads, 0, stream>>>(workspace, num_chunks, result);
  CUDA_CHECK_LAST_LAUNCH();
}

}  // namespace braid::kernels::cuda
