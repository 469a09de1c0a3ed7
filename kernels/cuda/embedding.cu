#include "kernels/cuda/embedding.h"

#include <algorithm>
#include <climits>
#include <cstdint>

#include <cub/device/device_radix_sort.cuh>

#include "kernels/cuda/common.cuh"

namespace braid::kernels::cuda {

namespace {


constexpr int kMaxThreads = 256;

// Block (threads), grid (n, column slabs): row i of out gets columns j .. j+VEC-1 of table[ids[i]].
template <typename Out, typename Id, int VEC>
__global__ void __launch_bounds__(kMaxThreads)
    gather_kernel(const float* __restrict__ table, const Id* __restrict__ ids,
                  Out* __restrict__ out, int64_t dim) {
  const int64_t i = blockIdx.x;
  const int64_t j = (int64_t(blockIdx.y) * blockDim.x + threadIdx.x) * VEC;
  if (j >= dim) return;
  float row[VEC];
  load_floats<float, VEC>(table + int64_t(ids[i]) * dim + j, row);
  store_floats<Out, VEC>(out + i * dim + j, row);
}

// The sort's input: key = id, value = position.
__global__ void prepare_sort_kernel(const int64_t* __restrict__ ids, uint32_t* __restrict__ keys,
                                    int32_t* __restrict__ positions, int64_t n) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= n) return;
  keys[i] = uint32_t(ids[i]);
  positions[i] = int32_t(i);
}

// starts[v] = the first index of the sorted ids holding an id >= v, for v in [0, vocab]: id v's
// positions are sorted_positions[starts[v] .. starts[v+1]).
__global__ void run_starts_kernel(const uint32_t* __restrict__ sorted_ids, int64_t n,
                                  int64_t vocab, int32_t* __restrict__ starts) {
  const int64_t v = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (v > vocab) return;
  int64_t low = 0, high = n;
  while (low < high) {
    const int64_t middle = (low + high) / 2;
    if (int64_t(sorted_ids[middle]) < v) low = middle + 1;
    else high = middle;
  }
  starts[v] = int32_t(low);
}

// Block (threads), grid (vocab, column slabs): row v of d_table, columns j .. j+VEC-1, is the sum
// of the d_out rows at id v's positions, added in position order (the CPU's order), or 0.
template <int VEC>
__global__ void __launch_bounds__(kMaxThreads)
    table_grad_kernel(const int32_t* __restrict__ starts, const int32_t* __restrict__ positions,
                      const float* __restrict__ d_out, float* __restrict__ d_table, int64_t dim) {
  const int64_t v = blockIdx.x;
  const int64_t j = (int64_t(blockIdx.y) * blockDim.x + threadIdx.x) * VEC;
  if (j >= dim) return;
  const int32_t begin = starts[v], end = starts[v + 1];
  float sum[VEC];
#pragma unroll
  for (int k = 0; k < VEC; ++k) sum[k] = 0.0f;
#pragma unroll 4
  for (int32_t p = begin; p < end; ++p) {
    float row[VEC];
    load_floats<float, VEC>(d_out + int64_t(positions[p]) * dim + j, row);
#pragma unroll
    for (int k = 0; k < VEC; ++k) sum[k] += row[k];
  }
  store_floats<float, VEC>(d_table + v * dim + j, sum);
}

bool aligned(const void* pointer, size_t bytes) {
  return reinterpret_cast<uintptr_t>(pointer) % bytes == 0;
}

// Threads per block and column slabs for rows of `dim` floats moved VEC at a time.
struct RowLaunch {
  int threads;
  int64_t slabs;
};
RowLaunch row_launch(int64_t dim, int vec) {
  const int64_t vectors = ceil_div(dim, vec);
  const int threads = int(std::clamp<int64_t>(ceil_div(vectors, 32) * 32, 32, kMaxThreads));
  return {threads, ceil_div(vectors, threads)};
}

// Bits of the sort keys: enough for ids up to vocab - 1.
int key_bits(int64_t vocab) {
  int bits = 1;
  while (bits < 32 && (int64_t(1) << bits) < vocab) ++bits;
  return bits;
}

constexpr size_t kAlign = 256;
size_t round_up(size_t bytes) { return (bytes + kAlign - 1) / kAlign * kAlign; }

// Byte offsets of the backward's scratch arrays inside the workspace (from its first 256-byte
// aligned address).
struct Layout {
  size_t keys_in, keys_out, positions_in, positions_out, starts, sort_temp, sort_temp_bytes, total;
};

Layout layout_for(int64_t n, int64_t vocab) {
  Layout layout{};
  size_t sort_bytes = 0;
  if (n > 0) {
    CUDA_CHECK(cub::DeviceRadixSort::SortPairs(
        nullptr, sort_bytes, static_cast<const uint32_t*>(nullptr), static_cast<uint32_t*>(nullptr),
        static_cast<const int32_t*>(nullptr), static_cast<int32_t*>(nullptr), int(n), 0,
        key_bits(vocab)));
  }
  const size_t ids_bytes = round_up(size_t(n) * 4);
  layout.keys_in = 0;
  layout.keys_out = layout.keys_in + ids_bytes;
  layout.positions_in = layout.keys_out + ids_bytes;
  layout.positions_out = layout.positions_in + ids_bytes;
  layout.starts = layout.positions_out + ids_bytes;
  layout.sort_temp = layout.starts + round_up(size_t(vocab + 1) * 4);
  layout.sort_temp_bytes = sort_bytes;
  layout.total = layout.sort_temp + round_up(sort_bytes) + kAlign;  // + room to align the base
  return layout;
}

void check_sizes(int64_t n, int64_t vocab, int64_t dim) {
  BRAID_CHECK(n >= 0 && vocab >= 0 && dim >= 0, "embedding: bad sizes n ", n, ", V ", vocab,
              ", d ", dim);
  BRAID_CHECK(n < INT_MAX && vocab < INT_MAX && ceil_div(dim, 32) <= 65535,
              "embedding: (n, V, d) = (", n, ", ", vocab, ", ", dim,
              ") is too large for the CUDA kernel");
}

template <typename Id>
void gather(const float* table, const Id* ids, void* out, int64_t n, int64_t dim, DType out_dtype,
            cudaStream_t stream) {
  check_sizes(n, 0, dim);
  if (n == 0 || dim == 0) return;
  dispatch_activation("embedding", out_dtype, [&]<typename Out>() {
    auto launch = [&]<int VEC>() {
      const RowLaunch shape = row_launch(dim, VEC);
      gather_kernel<Out, Id, VEC><<<dim3(unsigned(n), unsigned(shape.slabs)), shape.threads, 0,
                                    stream>>>(table, ids, static_cast<Out*>(out), dim);
      CUDA_CHECK_LAST_LAUNCH();
    };
    if (dim % 4 == 0 && aligned(table, 16) && aligned(out, 4 * sizeof(Out)))
      launch.template operator()<4>();
    else launch.template operator()<1>();
  });
}

}  // namespace

void embedding_forward(const float* table, const int64_t* ids, void* out, int64_t n, int64_t dim,
                       DType out_dtype, cudaStream_t stream) {
  gather(table, ids, out, n, dim, out_dtype, stream);
}

void embedding_forward(const float* table, const int32_t* ids, void* out, int64_t n, int64_t dim,
                       DType out_dtype, cudaStream_t stream) {
  gather(table, ids, out, n, dim, out_dtype, stream);
}

size_t embedding_backward_workspace_floats(int64_t n, int64_t vocab) {
  check_sizes(n, vocab, 0);
  return layout_for(n, vocab).total / sizeof(float);
}

void embedding_backward(const int64_t* ids, const float* d_out, float* d_table, float* workspace,
                        int64_t n, int64_t vocab, int64_t dim, cudaStream_t stream) {
  check_sizes(n, vocab, dim);
  if (vocab == 0 || dim == 0) return;
  const Layout layout = layout_for(n, vocab);
  char* base = reinterpret_cast<char*>(
      (reinterpret_cast<uintptr_t>(workspace) + kAlign - 1) / kAlign * kAlign);
  uint32_t* keys_in = reinterpret_cast<uint32_t*>(base + layout.keys_in);
  uint32_t* keys_out = reinterpret_cast<uint32_t*>(base + layout.keys_out);
  int32_t* positions_in = reinterpret_cast<int32_t*>(base + layout.positions_in);
  int32_t* positions_out = reinterpret_cast<int32_t*>(base + layout.positions_out);
  int32_t* starts = reinterpret_cast<int32_t*>(base + layout.starts);

  // Stage 1: sort the positions by id; the radix sort is stable, so each id's positions stay in
  // increasing order (the CPU's summation order).
  if (n > 0) {
    prepare_sort_kernel<<<unsigned(ceil_div(n, 256)), 256, 0, stream>>>(ids, keys_in,
                                                                         positions_in, n);
    CUDA_CHECK_LAST_LAUNCH();
    size_t sort_bytes = layout.sort_temp_bytes;
    CUDA_CHECK(cub::DeviceRadixSort::SortPairs(base + layout.sort_temp, sort_bytes, keys_in,
                                               keys_out, positions_in, positions_out, int(n), 0,
                                               key_bits(vocab), stream));
  }

  // Stage 2: where each id's run of positions starts.
  run_starts_kernel<<<unsigned(ceil_div(vocab + 1, 256)), 256, 0, stream>>>(keys_out, n, vocab,
                                                                           starts);
  CUDA_CHECK_LAST_LAUNCH();

  // Stage 3: every row of d_table, summed from its run (written as 0 when the run is empty).
  auto launch = [&]<int VEC>() {
    const RowLaunch shape = row_launch(dim, VEC);
    table_grad_kernel<VEC><<<dim3(unsigned(vocab), unsigned(shape.slabs)), shape.threads, 0,
                             stream>>>(starts, positions_out, d_out, d_table, dim);
    CUDA_CHECK_LAST_LAUNCH();
  };
  if (dim % 4 == 0 && aligned(d_out, 16) && aligned(d_table, 16)) launch.template operator()<4>();
  else launch.template operator()<1>();
}

}  // namespace braid::kernels::cuda
