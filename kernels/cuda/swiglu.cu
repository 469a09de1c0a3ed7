#include "kernels/cuda/swiglu.h"

#include <algorithm>
#include <cstring>

#include "kernels/cuda/common.cuh"
#include "kernels/cuda/launch.h"

namespace braid::kernels::cuda {

namespace {

constexpr int kThreads = 256;
constexpr int64_t kMaxBlocks = int64_t(1) << 20;


// The same formulas as kernels/cpu/activations.h, in fp32.
__device__ __forceinline__ float sigmoid_of(float u) { return 1.0f / (1.0f + expf(-u)); }

// Where the gate's element i lies: at i, or (kRows) in rows of `columns` elements lying `stride`
// apart, as a slice of a wider projection does.
struct GateLayout {
  int64_t columns, stride;
};

template <bool kRows>
__device__ __forceinline__ int64_t gate_index(int64_t i, const GateLayout& layout) {
  if constexpr (kRows) return i / layout.columns * layout.stride + i % layout.columns;
  else return i;
}

// out = SiLU(gate) * up on V elements (a whole vector, or one tail element with V = 1).
template <typename T, int V>
__device__ __forceinline__ void swiglu_forward_at(const T* gate, const T* up, T* out) {
  float g[V], u[V], h[V];
  load_floats<T, V>(gate, g);
  load_floats<T, V>(up, u);
#pragma unroll
  for (int e = 0; e < V; ++e) h[e] = g[e] * sigmoid_of(g[e]) * u[e];
  store_floats<T, V>(out, h);
}

// Vector j of n / V, kUnroll vectors per thread per step (all loads issued before any math). With
// kRows a vector never straddles two gate rows (V divides `columns`).
template <typename T, int V, int kUnroll, bool kRows>
__global__ void __launch_bounds__(kThreads) swiglu_forward_kernel(const T* gate, const T* up, T* out,
                                                                  int64_t n, GateLayout layout) {
  start_after_prior_grids();  // launched with launch_dependent (launch.h)
  const int64_t vectors = n / V;
  const int64_t step = int64_t(gridDim.x) * kThreads * kUnroll;
  for (int64_t base = int64_t(blockIdx.x) * kThreads * kUnroll + threadIdx.x; base < vectors;
       base += step) {
    float g[kUnroll][V], u[kUnroll][V];
#pragma unroll
    for (int i = 0; i < kUnroll; ++i) {
      const int64_t j = base + int64_t(i) * kThreads;
      if (j < vectors) {
        load_floats<T, V>(gate + gate_index<kRows>(j * V, layout), g[i]);
        load_floats<T, V>(up + j * V, u[i]);
      }
    }
#pragma unroll
    for (int i = 0; i < kUnroll; ++i) {
      const int64_t j = base + int64_t(i) * kThreads;
      if (j < vectors) {
        float h[V];
#pragma unroll
        for (int e = 0; e < V; ++e) h[e] = g[i][e] * sigmoid_of(g[i][e]) * u[i][e];
        store_floats<T, V>(out + j * V, h);
      }
    }
  }
  // Tail: the n % V elements after the last whole vector (fewer than V <= kThreads).
  const int64_t tail = vectors * V + threadIdx.x;
  if (blockIdx.x == 0 && tail < n)
    swiglu_forward_at<T, 1>(gate + gate_index<kRows>(tail, layout), up + tail, out + tail);
}

template <int V>
__device__ __forceinline__ void swiglu_backward_math(const float (&g)[V], const float (&u)[V],
                                                     const float (&d)[V], float (&d_gate)[V],
                                                     float (&d_up)[V]) {
#pragma unroll
  for (int e = 0; e < V; ++e) {
    const float s = sigmoid_of(g[e]);
    d_gate[e] = d[e] * u[e] * (s * (1.0f + g[e] * (1.0f - s)));
    d_up[e] = d[e] * (g[e] * s);
  }
}

// The gradients are activations like gate and up: all five tensors are T, read and written in
// the same vectors, the math in fp32 with one rounding at the store.
template <typename T, int V, int kUnroll>
__global__ void __launch_bounds__(kThreads) swiglu_backward_kernel(const T* gate, const T* up,
                                                                   const T* d_out, T* d_gate,
                                                                   T* d_up, int64_t n) {
  const int64_t vectors = n / V;
  const int64_t step = int64_t(gridDim.x) * kThreads * kUnroll;
  for (int64_t base = int64_t(blockIdx.x) * kThreads * kUnroll + threadIdx.x; base < vectors;
       base += step) {
    float g[kUnroll][V], u[kUnroll][V], d[kUnroll][V];
#pragma unroll
    for (int i = 0; i < kUnroll; ++i) {
      const int64_t j = base + int64_t(i) * kThreads;
      if (j < vectors) {
        load_floats<T, V>(gate + j * V, g[i]);
        load_floats<T, V>(up + j * V, u[i]);
        load_floats<T, V>(d_out + j * V, d[i]);
      }
    }
#pragma unroll
    for (int i = 0; i < kUnroll; ++i) {
      const int64_t j = base + int64_t(i) * kThreads;
      if (j < vectors) {
        float dg[V], du[V];
        swiglu_backward_math<V>(g[i], u[i], d[i], dg, du);
        store_floats<T, V>(d_gate + j * V, dg);
        store_floats<T, V>(d_up + j * V, du);
      }
    }
  }
  // Tail: the n % V elements after the last whole vector, one per thread of block 0.
  const int64_t tail = vectors * V + threadIdx.x;
  if (blockIdx.x == 0 && tail < n) {
    float g[1], u[1], d[1], dg[1], du[1];
    load_floats<T, 1>(gate + tail, g);
    load_floats<T, 1>(up + tail, u);
    load_floats<T, 1>(d_out + tail, d);
    swiglu_backward_math<1>(g, u, d, dg, du);
    store_floats<T, 1>(d_gate + tail, dg);
    store_floats<T, 1>(d_up + tail, du);
  }
}

bool aligned_16(std::initializer_list<const void*> pointers) {
  for (const void* p : pointers)
    if (reinterpret_cast<uintptr_t>(p) % 16 != 0) return false;
  return true;
}

unsigned grid_for(int64_t n, int vec, int unroll) {
  return unsigned(std::clamp<int64_t>(ceil_div(n / vec, int64_t(kThreads) * unroll), 1, kMaxBlocks));
}

}  // namespace

void swiglu_forward(const void* gate, const void* up, void* out, int64_t n, DType dtype,
                    cudaStream_t stream, int64_t columns, int64_t gate_row_stride) {
  if (n <= 0) return;
  const bool rows = gate_row_stride != 0 && gate_row_stride != columns;
  BRAID_CHECK(!rows || (columns > 0 && n % columns == 0), "swiglu_forward: ", n,
              " elements are not rows of ", columns);
  const GateLayout layout{columns, gate_row_stride};
  dispatch_activation("swiglu_forward", dtype, [&]<typename T>() {
    // 2 bf16 or 4 f32 vectors per tensor per thread: 32 or 64 bytes in flight, in ~50 registers.
    constexpr int kVec = int(16 / sizeof(T)), kUnroll = sizeof(T) == 2 ? 2 : 4;
    const bool vector =
        aligned_16({gate, up, out}) && (!rows || (columns % kVec == 0 && gate_row_stride % kVec == 0));
    const T* g = static_cast<const T*>(gate);
    const T* u = static_cast<const T*>(up);
    T* o = static_cast<T*>(out);
    auto launch = [&]<int V, bool kRows>() {
      launch_dependent(swiglu_forward_kernel<T, V, kUnroll, kRows>, grid_for(n, V, kUnroll), dim3(kThreads), 0, stream,
                       g, u, o, n, layout);
    };
    if (vector && rows) launch.template operator()<kVec, true>();
    else if (vector) launch.template operator()<kVec, false>();
    else if (rows) launch.template operator()<1, true>();
    else launch.template operator()<1, false>();
  });
}

void swiglu_backward(const void* gate, const void* up, const void* d_out, void* d_gate,
                     void* d_up, int64_t n, DType dtype, cudaStream_t stream) {
  if (n <= 0) return;
  const bool vector = aligned_16({gate, up, d_out, d_gate, d_up});
  dispatch_activation("swiglu_backward", dtype, [&]<typename T>() {
    // Five 16-byte streams per vector (three read, two written), 2 vectors per thread: 96 bytes of
    // loads in flight per thread for either T.
    constexpr int kVec = int(16 / sizeof(T)), kUnroll = 2;
    const T* g = static_cast<const T*>(gate);
    const T* u = static_cast<const T*>(up);
    const T* d = static_cast<const T*>(d_out);
    T* dg = static_cast<T*>(d_gate);
    T* du = static_cast<T*>(d_up);
    if (vector)
      swiglu_backward_kernel<T, kVec, kUnroll>
          <<<grid_for(n, kVec, kUnroll), kThreads, 0, stream>>>(g, u, d, dg, du, n);
    else
      swiglu_backward_kernel<T, 1, kUnroll>
          <<<grid_for(n, 1, kUnroll), kThreads, 0, stream>>>(g, u, d, dg, du, n);
    CUDA_CHECK_LAST_LAUNCH();
  });
}

}  // namespace braid::kernels::cuda
