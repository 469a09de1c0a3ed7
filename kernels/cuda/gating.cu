#include "kernels/cuda/gating.h"

#include <algorithm>
#include <cstring>

#include "kernels/cuda/common.cuh"

namespace braid::kernels::cuda {

namespace {

constexpr int kThreads = 256;
constexpr int kUnroll = 2;  // independent vectors per thread per step: loads in flight
constexpr int64_t kMaxBlocks = int64_t(1) << 20;
// Blocks (so partials) of mul_scalar_backward's first pass at most; the count depends only on n
// and the vector width, so the summation order is fixed.
constexpr int64_t kSumBlocks = 1024;


// The same formula as kernels/cpu/activations.h, in fp32.
__device__ __forceinline__ float sigmoid_of(float u) { return 1.0f / (1.0f + expf(-u)); }

// Elementwise maps: out = Map::apply(a, b, scalar) per element, with a an activation (T), b an
// optional f32 stream (0 without it) and scalar an optional device float (0 without it).
struct SigmoidForward {
  static __device__ __forceinline__ float apply(float x, float, float) { return sigmoid_of(x); }
};
struct SigmoidBackward {  // a = x, b = d_out
  static __device__ __forceinline__ float apply(float x, float d, float) {
    const float s = sigmoid_of(x);
    return d * s * (1.0f - s);
  }
};
struct MulScalarForward {  // scalar in the third argument
  static __device__ __forceinline__ float apply(float x, float, float scalar) { return x * scalar; }
};

// out[i] = Map(a[i], b[i] (or 0 without b), scalar[0] (or 0 without scalar)).
template <typename Map, typename T, typename OutT, int V>
__global__ void __launch_bounds__(kThreads) map_kernel(const T* a, const float* b,
                                                       const float* scalar, OutT* out, int64_t n) {
  const float c = scalar != nullptr ? *scalar : 0.0f;
  const int64_t vectors = n / V;
  const int64_t step = int64_t(gridDim.x) * kThreads * kUnroll;
  for (int64_t base = int64_t(blockIdx.x) * kThreads * kUnroll + threadIdx.x; base < vectors;
       base += step) {
    float va[kUnroll][V], vb[kUnroll][V];
#pragma unroll
    for (int i = 0; i < kUnroll; ++i) {
      const int64_t j = base + int64_t(i) * kThreads;
      if (j < vectors) {
        load_floats<T, V>(a + j * V, va[i]);
        if (b != nullptr) {
          load_floats<float, V>(b + j * V, vb[i]);
        } else {
#pragma unroll
          for (int e = 0; e < V; ++e) vb[i][e] = 0.0f;
        }
      }
    }
#pragma unroll
    for (int i = 0; i < kUnroll; ++i) {
      const int64_t j = base + int64_t(i) * kThreads;
      if (j < vectors) {
        float o[V];
#pragma unroll
        for (int e = 0; e < V; ++e) o[e] = Map::apply(va[i][e], vb[i][e], c);
        store_floats<OutT, V>(out + j * V, o);
      }
    }
  }
  // Tail: the n % V elements after the last whole vector (fewer than V <= kThreads).
  const int64_t tail = vectors * V + threadIdx.x;
  if (blockIdx.x == 0 && tail < n)
    out[tail] = from_float<OutT>(Map::apply(to_float(a[tail]), b != nullptr ? b[tail] : 0.0f, c));
}

// d_x = d_out * scalar everywhere; partials[block] = this block's sum of d_out * x (per thread in
// index order, then block_sum's fixed tree).
template <typename T, int V>
__global__ void __launch_bounds__(kThreads) mul_scalar_backward_kernel(const T* x, const float* scalar,
                                                                       const float* d_out, float* d_x,
                                                                       float* partials, int64_t n) {
  __shared__ float scratch[32];
  const float c = *scalar;
  const int64_t vectors = n / V;
  const int64_t step = int64_t(gridDim.x) * kThreads * kUnroll;
  float total = 0.0f;
  for (int64_t base = int64_t(blockIdx.x) * kThreads * kUnroll + threadIdx.x; base < vectors;
       base += step) {
    float vx[kUnroll][V], vd[kUnroll][V];
#pragma unroll
    for (int i = 0; i < kUnroll; ++i) {
      const int64_t j = base + int64_t(i) * kThreads;
      if (j < vectors) {
        load_floats<T, V>(x + j * V, vx[i]);
        load_floats<float, V>(d_out + j * V, vd[i]);
      }
    }
#pragma unroll
    for (int i = 0; i < kUnroll; ++i) {
      const int64_t j = base + int64_t(i) * kThreads;
      if (j < vectors) {
        float o[V];
#pragma unroll
        for (int e = 0; e < V; ++e) {
          o[e] = vd[i][e] * c;
          total += vd[i][e] * vx[i][e];
        }
        store_floats<float, V>(d_x + j * V, o);
      }
    }
  }
  const int64_t tail = vectors * V + threadIdx.x;
  if (blockIdx.x == 0 && tail < n) {
    const float d = d_out[tail];
    d_x[tail] = d * c;
    total += d * to_float(x[tail]);
  }
  total = block_sum(total, scratch);
  if (threadIdx.x == 0) partials[blockIdx.x] = total;
}

// out[0] = the partials added in a fixed order (per thread in index order, then block_sum).
__global__ void sum_partials_kernel(const float* partials, int count, float* out) {
  __shared__ float scratch[32];
  float total = 0.0f;
  for (int i = threadIdx.x; i < count; i += blockDim.x) total += partials[i];
  total = block_sum(total, scratch);
  if (threadIdx.x == 0) out[0] = total;
}

bool aligned_16(std::initializer_list<const void*> pointers) {
  for (const void* p : pointers)
    if (p != nullptr && reinterpret_cast<uintptr_t>(p) % 16 != 0) return false;
  return true;
}

int64_t blocks_for(int64_t n, int vec) { return std::max<int64_t>(1, ceil_div(n / vec, int64_t(kThreads) * kUnroll)); }

// Launches map_kernel<Map> with vector accesses when every pointer allows.
template <typename Map, typename OutT, typename T>
void launch_map(const void* a, const float* b, const float* scalar, void* out, int64_t n,
                cudaStream_t stream) {
  constexpr int kVec = int(16 / sizeof(T));
  const T* in = static_cast<const T*>(a);
  OutT* o = static_cast<OutT*>(out);
  if (aligned_16({a, b, out})) {
    const unsigned blocks = unsigned(std::min(blocks_for(n, kVec), kMaxBlocks));
    map_kernel<Map, T, OutT, kVec><<<blocks, kThreads, 0, stream>>>(in, b, scalar, o, n);
  } else {
    const unsigned blocks = unsigned(std::min(blocks_for(n, 1), kMaxBlocks));
    map_kernel<Map, T, OutT, 1><<<blocks, kThreads, 0, stream>>>(in, b, scalar, o, n);
  }
  CUDA_CHECK_LAST_LAUNCH();
}

}  // namespace

void sigmoid_forward(const void* x, void* out, int64_t n, DType dtype, cudaStream_t stream) {
  if (n <= 0) return;
  dispatch_activation("sigmoid_forward", dtype, [&]<typename T>() {
    launch_map<SigmoidForward, T, T>(x, nullptr, nullptr, out, n, stream);
  });
}

void sigmoid_backward(const void* x, const float* d_out, float* d_x, int64_t n, DType dtype,
                      cudaStream_t stream) {
  if (n <= 0) return;
  dispatch_activation("sigmoid_backward", dtype, [&]<typename T>() {
    launch_map<SigmoidBackward, float, T>(x, d_out, nullptr, d_x, n, stream);
  });
}

void mul_scalar_forward(const void* x, const float* scalar, void* out, int64_t n, DType dtype,
                        cudaStream_t stream) {
  if (n <= 0) return;
  dispatch_activation("mul_scalar_forward", dtype, [&]<typename T>() {
    launch_map<MulScalarForward, T, T>(x, nullptr, scalar, out, n, stream);
  });
}

size_t mul_scalar_workspace_floats(int64_t n) {
  // The scalar plan has the most blocks.
  return n <= 0 ? 0 : size_t(std::min(blocks_for(n, 1), kSumBlocks));
}

void mul_scalar_backward(const void* x, const float* scalar, const float* d_out, float* d_x,
                         float* d_scalar, int64_t n, DType dtype, float* workspace,
                         cudaStream_t stream) {
  if (n <= 0) {  // an empty sum
    CUDA_CHECK(cudaMemsetAsync(d_scalar, 0, sizeof(float), stream));
    return;
  }
  dispatch_activation("mul_scalar_backward", dtype, [&]<typename T>() {
    constexpr int kVec = int(16 / sizeof(T));
    const T* in = static_cast<const T*>(x);
    const bool vector = aligned_16({x, d_out, d_x});
    const int64_t blocks = std::min(blocks_for(n, vector ? kVec : 1), kSumBlocks);
    if (vector)
      mul_scalar_backward_kernel<T, kVec>
          <<<unsigned(blocks), kThreads, 0, stream>>>(in, scalar, d_out, d_x, workspace, n);
    else
      mul_scalar_backward_kernel<T, 1>
          <<<unsigned(blocks), kThreads, 0, stream>>>(in, scalar, d_out, d_x, workspace, n);
    CUDA_CHECK_LAST_LAUNCH();
    sum_partials_kernel<<<1, 1024, 0, stream>>>(workspace, int(blocks), d_scalar);
    CUDA_CHECK_LAST_LAUNCH();
  });
}

}  // namespace braid::kernels::cuda
