// Device helpers shared by the CUDA kernels: activation dtypes, fixed-order reductions, dispatch.
//
// Precision (DESIGN.md "Precision"): activations are stored as T = float or __nv_bfloat16 and are
// always widened to fp32 for arithmetic; parameters, statistics and gradients are fp32.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "runtime/cuda_check.h"
#include "runtime/dtype.h"

namespace braid::kernels::cuda {

__host__ __device__ constexpr int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

__device__ __forceinline__ float to_float(float value) { return value; }
__device__ __forceinline__ float to_float(__nv_bfloat16 value) { return __bfloat162float(value); }

template <typename T>
__device__ __forceinline__ T from_float(float value);
template <>
__device__ __forceinline__ float from_float<float>(float value) { return value; }
template <>
__device__ __forceinline__ __nv_bfloat16 from_float<__nv_bfloat16>(float value) {
  return __float2bfloat16_rn(value);
}

// Sum / max over the 32 lanes of a warp; every lane gets the result. The butterfly order is fixed,
// so results are bitwise reproducible.
__device__ __forceinline__ float warp_sum(float value) {
  for (int offset = 16; offset > 0; offset >>= 1) value += __shfl_xor_sync(0xffffffffu, value, offset);
  return value;
}
__device__ __forceinline__ float warp_max(float value) {
  for (int offset = 16; offset > 0; offset >>= 1)
    value = fmaxf(value, __shfl_xor_sync(0xffffffffu, value, offset));
  return value;
}

// Sum over the whole block (blockDim.x a multiple of 32, at most 1024); every thread gets the
// result. `scratch` holds 32 floats of shared memory. Warp partials are added in warp order, so the
// result does not depend on scheduling. Contains __syncthreads: call from all threads.
__device__ __forceinline__ float block_sum(float value, float* scratch) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
  value = warp_sum(value);
  __syncthreads();  // scratch may still be read by a previous call
  if (lane == 0) scratch[warp] = value;
  __syncthreads();
  value = lane < warps ? scratch[lane] : 0.0f;
  return warp_sum(value);
}

// Max over the whole block, the same pattern and contract as block_sum.
__device__ __forceinline__ float block_max(float value, float* scratch) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
  value = warp_max(value);
  __syncthreads();  // scratch may still be read by a previous call
  if (lane == 0) scratch[warp] = value;
  __syncthreads();
  value = lane < warps ? scratch[lane] : -INFINITY;
  return warp_max(value);
}

// V consecutive elements of T moved as one aligned access (V * sizeof(T) a power of two <= 16).
template <typename T, int V>
struct alignas(sizeof(T) * V) Pack {
  T value[V];
};

// Reads V elements of T at an address aligned to V * sizeof(T) (the caller checked it), widened to
// fp32: in 16-byte words when the span is a multiple of 16 bytes, as one aligned access when it is
// a smaller power of two, element by element otherwise.
template <typename T, int V>
__device__ __forceinline__ void load_floats(const T* p, float (&out)[V]) {
  constexpr int kBytes = int(sizeof(T)) * V;
  if constexpr (kBytes % 16 == 0) {
    constexpr int kWords = kBytes / 16, kPerWord = int(16 / sizeof(T));
#pragma unroll
    for (int w = 0; w < kWords; ++w) {
      const Pack<T, kPerWord> pack = reinterpret_cast<const Pack<T, kPerWord>*>(p)[w];
#pragma unroll
      for (int k = 0; k < kPerWord; ++k) out[w * kPerWord + k] = to_float(pack.value[k]);
    }
  } else if constexpr ((kBytes & (kBytes - 1)) == 0) {
    const Pack<T, V> pack = *reinterpret_cast<const Pack<T, V>*>(p);
#pragma unroll
    for (int k = 0; k < V; ++k) out[k] = to_float(pack.value[k]);
  } else {
#pragma unroll
    for (int k = 0; k < V; ++k) out[k] = to_float(p[k]);
  }
}

// Rounds V floats to T and writes them at an address aligned like load_floats'.
template <typename T, int V>
__device__ __forceinline__ void store_floats(T* p, const float (&in)[V]) {
  constexpr int kBytes = int(sizeof(T)) * V;
  if constexpr (kBytes % 16 == 0) {
    constexpr int kWords = kBytes / 16, kPerWord = int(16 / sizeof(T));
#pragma unroll
    for (int w = 0; w < kWords; ++w) {
      Pack<T, kPerWord> pack;
#pragma unroll
      for (int k = 0; k < kPerWord; ++k) pack.value[k] = from_float<T>(in[w * kPerWord + k]);
      reinterpret_cast<Pack<T, kPerWord>*>(p)[w] = pack;
    }
  } else if constexpr ((kBytes & (kBytes - 1)) == 0) {
    Pack<T, V> pack;
#pragma unroll
    for (int k = 0; k < V; ++k) pack.value[k] = from_float<T>(in[k]);
    *reinterpret_cast<Pack<T, V>*>(p) = pack;
  } else {
#pragma unroll
    for (int k = 0; k < V; ++k) p[k] = from_float<T>(in[k]);
  }
}

// Runs `body.template operator()<T>()` with T the storage type of an activation dtype.
template <typename Body>
void dispatch_activation(const char* op, DType dtype, Body&& body) {
  switch (dtype) {
    case DType::f32: body.template operator()<float>(); return;
    case DType::bf16: body.template operator()<__nv_bfloat16>(); return;
    default: BRAID_FAIL(op, ": CUDA kernels store activations in f32 or bf16, got ", dtype_name(dtype));
  }
}

}  // namespace braid::kernels::cuda
