#include "kernels/cuda/rope.h"

#include <algorithm>
#include <climits>
#include <cstdint>

#include "kernels/cuda/common.cuh"

namespace braid::kernels::cuda {

namespace {


// The inverse frequencies travel as a kernel argument: no upload, no device allocation.
struct Frequencies {
  double value[kRopeMaxHalfDim];
};

constexpr int kMaxThreads = 256;
// A block rotates about this many vectors, over as many consecutive (b, t) rows as that takes, so
// that blocks of narrow rows (few heads) still move enough bytes to hide their start-up.
constexpr int kVectorsPerBlock = 1024;
// Cosines and sines of a block's rows: at most this many of each (32 KB of shared memory in all).
constexpr int kMaxTableEntries = 4096;

// Rotates every pair of rows [blockIdx.x * rows_per_block, ...) (row = b * time + t) by
// direction * angle (+1 forward, -1 the inverse), reading In and writing Out.
template <typename In, typename Out, int VEC>
__global__ void __launch_bounds__(kMaxThreads)
    rotate_kernel(const In* __restrict__ x, Out* __restrict__ out, const Frequencies frequencies,
                  int64_t rows, int64_t time, int heads, int half, int rows_per_block,
                  int64_t position_offset, float direction) {
  extern __shared__ float table[];  // cosines [rows_per_block][half], then sines
  float* cosines = table;
  float* sines = table + rows_per_block * half;
  const int64_t first_row = int64_t(blockIdx.x) * rows_per_block;
  const int block_rows = int(rows - first_row < rows_per_block ? rows - first_row : rows_per_block);

  // Stage 1: the rows' cosines and sines. The angle reaches thousands of radians, where a float
  // angle would be off by ~1e-3, so it is formed and reduced in double as on the CPU.
  for (int e = threadIdx.x; e < block_rows * half; e += blockDim.x) {
    const int r = e / half, i = e - r * half;
    const int64_t position = position_offset + (first_row + r) % time;
    double sine, cosine;
    sincos(double(position) * frequencies.value[i], &sine, &cosine);
    cosines[e] = float(cosine);
    sines[e] = direction * float(sine);
  }
  __syncthreads();

  // Stage 2: rotate the pairs (i, i + half) of every head, VEC consecutive i per thread.
  const int per_head = half / VEC;
  const int per_row = heads * per_head;
  for (int e = threadIdx.x; e < block_rows * per_row; e += blockDim.x) {
    const int r = e / per_row, v = e - r * per_row;
    const int head = v / per_head;
    const int i = (v - head * per_head) * VEC;
    const int64_t first = ((first_row + r) * heads + head) * 2 * half + i;
    const float* row_cosines = cosines + r * half + i;
    const float* row_sines = sines + r * half + i;
    float a[VEC], b[VEC], rotated_a[VEC], rotated_b[VEC];
    load_floats<In, VEC>(x + first, a);
    load_floats<In, VEC>(x + first + half, b);
#pragma unroll
    for (int j = 0; j < VEC; ++j) {
      const float c = row_cosines[j], s = row_sines[j];
      rotated_a[j] = a[j] * c - b[j] * s;
      rotated_b[j] = b[j] * c + a[j] * s;
    }
    store_floats<Out, VEC>(out + first, rotated_a);
    store_floats<Out, VEC>(out + first + half, rotated_b);
  }
}

bool aligned(const void* pointer, size_t bytes) {
  return reinterpret_cast<uintptr_t>(pointer) % bytes == 0;
}

template <typename In, typename Out>
void rotate(const In* x, Out* out, const double* inverse_frequencies, int64_t batch, int64_t time,
            int64_t heads, int64_t head_dim, int64_t position_offset, float direction,
            cudaStream_t stream) {
  BRAID_CHECK(head_dim > 0 && head_dim % 2 == 0 && head_dim / 2 <= kRopeMaxHalfDim,
              "rope: the CUDA kernel needs an even head dim in [2, ", 2 * kRopeMaxHalfDim,
              "], got ", head_dim);
  BRAID_CHECK(batch >= 0 && time >= 0 && heads >= 0 && position_offset >= 0,
              "rope: bad sizes B ", batch, ", T ", time, ", H ", heads, ", offset ",
              position_offset);
  const int64_t rows = batch * time;
  if (rows == 0 || heads == 0) return;
  BRAID_CHECK(rows <= INT_MAX && heads * head_dim <= INT_MAX / 4, "rope: (B, T, H, D) = (",
              batch, ", ", time, ", ", heads, ", ", head_dim, ") is too large for one launch");
  const int half = int(head_dim / 2);
  Frequencies frequencies{};
  std::copy_n(inverse_frequencies, half, frequencies.value);

  auto launch = [&]<int VEC>() {
    const int64_t per_row = heads * half / VEC;
    const int64_t rows_per_block = std::clamp<int64_t>(
        std::min<int64_t>(kVectorsPerBlock / per_row, kMaxTableEntries / half), 1, rows);
    const int threads = int(
        std::clamp<int64_t>(ceil_div(rows_per_block * per_row, 32) * 32, 32, kMaxThreads));
    const size_t shared_bytes = size_t(2 * rows_per_block * half) * sizeof(float);
    rotate_kernel<In, Out, VEC><<<unsigned(ceil_div(rows, rows_per_block)), threads, shared_bytes,
                                  stream>>>(x, out, frequencies, rows, time, int(heads), half,
                                            int(rows_per_block), position_offset, direction);
    CUDA_CHECK_LAST_LAUNCH();
  };
  // Vector accesses need every pair start aligned: half a multiple of VEC and aligned bases.
  auto fits = [&](int vec) {
    return half % vec == 0 && aligned(x, vec * sizeof(In)) && aligned(out, vec * sizeof(Out));
  };
  if (fits(4)) launch.template operator()<4>();
  else if (fits(2)) launch.template operator()<2>();
  else launch.template operator()<1>();
}

}  // namespace

void rope_forward(const void* x, void* out, const double* inverse_frequencies, int64_t batch,
                  int64_t time, int64_t heads, int64_t head_dim, int64_t position_offset,
                  DType dtype, cudaStream_t stream) {
  dispatch_activation("rope", dtype, [&]<typename T>() {
    rotate(static_cast<const T*>(x), static_cast<T*>(out), inverse_frequencies, batch, time, heads,
           head_dim, position_offset, 1.0f, stream);
  });
}

void rope_backward(const float* d_out, float* d_x, const double* inverse_frequencies,
                   int64_t batch, int64_t time, int64_t heads, int64_t head_dim,
                   int64_t position_offset, cudaStream_t stream) {
  rotate(d_out, d_x, inverse_frequencies, batch, time, heads, head_dim, position_offset, -1.0f,
         stream);
}

}  // namespace braid::kernels::cuda
