#include "kernels/cuda/elementwise.h"

#include <algorithm>

#include "kernels/cuda/common.cuh"

namespace braid::kernels::cuda {

namespace {

constexpr int kThreads = 256;
// Blocks of the grid-stride loops: enough to fill an H100/H200 several times over.
constexpr int64_t kMaxBlocks = 4096;
// Blocks (and so partials) of sum's first pass; a fixed count keeps the summation order fixed.
constexpr int kSumBlocks = 512;
// Rows each block of mul_broadcast_last_backward's first pass reduces.
constexpr int64_t kRowsPerTile = 64;

int grid_for(int64_t n) { return int(std::min<int64_t>(ceil_div(n, kThreads), kMaxBlocks)); }

__device__ __forceinline__ float apply(BinaryOp op, float x, float y) {
  return op == BinaryOp::add ? x + y : op == BinaryOp::sub ? x - y : x * y;
}

// kVector consecutive elements a thread when every array is aligned to its kVector-element span
// (16 bytes of bf16, 32 of f32: the residual stream's gradient sums are bandwidth-bound), else one.
constexpr int kVector = 8;

template <typename A, typename B, typename Out>
__global__ void binary_kernel(BinaryOp op, const A* a, const B* b, Out* out, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x)
    out[i] = from_float<Out>(apply(op, to_float(a[i]), to_float(b[i])));
}

template <typename A, typename B, typename Out>
__global__ void binary_vector_kernel(BinaryOp op, const A* a, const B* b, Out* out, int64_t vectors) {
  for (int64_t v = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; v < vectors;
       v += int64_t(gridDim.x) * blockDim.x) {
    float x[kVector], y[kVector];
    load_floats<A, kVector>(a + v * kVector, x);
    load_floats<B, kVector>(b + v * kVector, y);
#pragma unroll
    for (int k = 0; k < kVector; ++k) x[k] = apply(op, x[k], y[k]);
    store_floats<Out, kVector>(out + v * kVector, x);
  }
}

template <typename T>
bool vector_aligned(const void* p) {
  return reinterpret_cast<uintptr_t>(p) % (sizeof(T) * kVector) == 0;
}

template <typename A, typename Out>
__global__ void scale_kernel(const A* a, float factor, Out* out, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x)
    out[i] = from_float<Out>(factor * to_float(a[i]));
}

template <typename Out>
__global__ void broadcast_scalar_kernel(const float* scalar, float factor, Out* out, int64_t n) {
  const float value = factor * scalar[0];
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x)
    out[i] = from_float<Out>(value);
}

// Pass 1: block b sums the elements i ≡ b (mod gridDim) in a fixed pattern into partials[b].
template <typename A>
__global__ void sum_partials_kernel(const A* a, int64_t n, float* partials) {
  __shared__ float scratch[32];
  float total = 0.0f;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x)
    total += to_float(a[i]);
  total = block_sum(total, scratch);
  if (threadIdx.x == 0) partials[blockIdx.x] = total;
}

// Pass 2: one block adds the partials in order.
template <typename Out>
__global__ void sum_final_kernel(const float* partials, int count, float factor, Out* out) {
  __shared__ float scratch[32];
  float total = 0.0f;
  for (int i = threadIdx.x; i < count; i += blockDim.x) total += partials[i];
  total = block_sum(total, scratch);
  if (threadIdx.x == 0) out[0] = from_float<Out>(factor * total);
}

template <typename T>
__global__ void mul_broadcast_last_forward_kernel(const T* x, const float* v, T* out,
                                                  int64_t count, int64_t channels) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < count;
       i += int64_t(gridDim.x) * blockDim.x)
    out[i] = from_float<T>(to_float(x[i]) * v[i % channels]);
}

// d_x everywhere, and per (row tile, channel) the partial sum of d_out * x over the tile's rows,
// in row order. Grid: (channel blocks, row tiles).
template <typename T>
__global__ void mul_broadcast_last_backward_kernel(const T* x, const float* v, const float* d_out,
                                                   float* d_x, float* partials, int64_t rows,
                                                   int64_t channels) {
  const int64_t c = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (c >= channels) return;
  const int64_t first = blockIdx.y * kRowsPerTile;
  const int64_t last = min(rows, first + kRowsPerTile);
  const float scale_c = v[c];
  float partial = 0.0f;
  for (int64_t r = first; r < last; ++r) {
    const int64_t i = r * channels + c;
    const float g = d_out[i];
    d_x[i] = g * scale_c;
    partial += g * to_float(x[i]);
  }
  partials[blockIdx.y * channels + c] = partial;
}

// d_v[c] = the tiles' partials of channel c, added in tile order.
__global__ void sum_tiles_kernel(const float* partials, int64_t tiles, int64_t channels,
                                 float* d_v) {
  const int64_t c = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (c >= channels) return;
  float total = 0.0f;
  for (int64_t t = 0; t < tiles; ++t) total += partials[t * channels + c];
  d_v[c] = total;
}

}  // namespace

void binary(BinaryOp op, const void* a, DType a_dtype, const void* b, DType b_dtype, void* out,
            DType out_dtype, int64_t n, cudaStream_t stream) {
  if (n == 0) return;
  dispatch_activation("binary", a_dtype, [&]<typename A>() {
    dispatch_activation("binary", b_dtype, [&]<typename B>() {
      dispatch_activation("binary", out_dtype, [&]<typename Out>() {
        const A* a_typed = static_cast<const A*>(a);
        const B* b_typed = static_cast<const B*>(b);
        Out* out_typed = static_cast<Out*>(out);
        if (n % kVector == 0 && vector_aligned<A>(a) && vector_aligned<B>(b) && vector_aligned<Out>(out)) {
          const int64_t vectors = n / kVector;
          binary_vector_kernel<A, B, Out><<<grid_for(vectors), kThreads, 0, stream>>>(op, a_typed, b_typed, out_typed,
                                                                                      vectors);
        } else {
          binary_kernel<A, B, Out><<<grid_for(n), kThreads, 0, stream>>>(op, a_typed, b_typed, out_typed, n);
        }
        CUDA_CHECK_LAST_LAUNCH();
      });
    });
  });
}

void scale(const void* a, DType a_dtype, float factor, void* out, DType out_dtype, int64_t n,
           cudaStream_t stream) {
  if (n == 0) return;
  dispatch_activation("scale", a_dtype, [&]<typename A>() {
    dispatch_activation("scale", out_dtype, [&]<typename Out>() {
      scale_kernel<A, Out><<<grid_for(n), kThreads, 0, stream>>>(
          static_cast<const A*>(a), factor, static_cast<Out*>(out), n);
      CUDA_CHECK_LAST_LAUNCH();
    });
  });
}

void broadcast_scalar(const float* scalar, float factor, void* out, DType out_dtype, int64_t n,
                      cudaStream_t stream) {
  if (n == 0) return;
  dispatch_activation("broadcast_scalar", out_dtype, [&]<typename Out>() {
    broadcast_scalar_kernel<Out><<<grid_for(n), kThreads, 0, stream>>>(scalar, factor,
                                                                       static_cast<Out*>(out), n);
    CUDA_CHECK_LAST_LAUNCH();
  });
}

int64_t sum_workspace_floats(int64_t) { return kSumBlocks; }

void sum(const void* a, DType a_dtype, float factor, void* out, DType out_dtype, int64_t n,
         float* workspace, cudaStream_t stream) {
  dispatch_activation("sum", a_dtype, [&]<typename A>() {
    sum_partials_kernel<A><<<kSumBlocks, kThreads, 0, stream>>>(static_cast<const A*>(a), n,
                                                                 workspace);
    CUDA_CHECK_LAST_LAUNCH();
  });
  dispatch_activation("sum", out_dtype, [&]<typename Out>() {
    sum_final_kernel<Out><<<1, kThreads, 0, stream>>>(workspace, kSumBlocks, factor,
                                                      static_cast<Out*>(out));
    CUDA_CHECK_LAST_LAUNCH();
  });
}

void mul_broadcast_last_forward(const void* x, const float* v, void* out, int64_t rows,
                                int64_t channels, DType dtype, cudaStream_t stream) {
  const int64_t count = rows * channels;
  if (count == 0) return;
  dispatch_activation("mul_broadcast_last", dtype, [&]<typename T>() {
    mul_broadcast_last_forward_kernel<T><<<grid_for(count), kThreads, 0, stream>>>(
        static_cast<const T*>(x), v, static_cast<T*>(out), count, channels);
    CUDA_CHECK_LAST_LAUNCH();
  });
}

int64_t mul_broadcast_last_workspace_floats(int64_t rows, int64_t channels) {
  return ceil_div(rows, kRowsPerTile) * channels;
}

void mul_broadcast_last_backward(const void* x, const float* v, const float* d_out, float* d_x,
                                 float* d_v, int64_t rows, int64_t channels, DType dtype,
                                 float* workspace, cudaStream_t stream) {
  if (channels == 0) return;
  const int64_t tiles = ceil_div(rows, kRowsPerTile);
  const unsigned channel_blocks = unsigned(ceil_div(channels, kThreads));
  if (tiles > 0) {
    dispatch_activation("mul_broadcast_last", dtype, [&]<typename T>() {
      mul_broadcast_last_backward_kernel<T><<<dim3(channel_blocks, unsigned(tiles)), kThreads, 0, stream>>>(
          static_cast<const T*>(x), v, d_out, d_x, workspace, rows, channels);
      CUDA_CHECK_LAST_LAUNCH();
    });
  }
  sum_tiles_kernel<<<channel_blocks, kThreads, 0, stream>>>(workspace, tiles, channels, d_v);
  CUDA_CHECK_LAST_LAUNCH();
}

}  // namespace braid::kernels::cuda
