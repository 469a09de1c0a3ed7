#include "kernels/cuda/sampling.h"

#include <cub/device/device_radix_sort.cuh>

#include "kernels/cuda/common.cuh"
#include "runtime/random_transform.h"

namespace braid::kernels::cuda {

namespace {

constexpr int kThreads = 1024;
constexpr int kWarps = kThreads / 32;
constexpr size_t kAlign = 256;

size_t round_up(size_t bytes) { return (bytes + kAlign - 1) / kAlign * kAlign; }

// Bits that hold a row index below `batch`.
int row_bits(int64_t batch) {
  int bits = 0;
  while ((int64_t(1) << bits) < batch) ++bits;
  return bits;
}

// Byte offsets inside the workspace (from its first 256-byte aligned address).
struct Layout {
  size_t keys_in, keys_out, ids_in, ids_out, prefix, sort_temp, sort_temp_bytes, total;
};

Layout layout_for(int64_t batch, int64_t vocab) {
  const int64_t n = batch * vocab;
  size_t sort_bytes = 0;
  CUDA_CHECK(cub::DeviceRadixSort::SortPairs(nullptr, sort_bytes, static_cast<const uint64_t*>(nullptr),
                                             static_cast<uint64_t*>(nullptr), static_cast<const int32_t*>(nullptr),
                                             static_cast<int32_t*>(nullptr), n, 0, 32 + row_bits(batch)));
  Layout layout{};
  layout.keys_in = 0;
  layout.keys_out = layout.keys_in + round_up(size_t(n) * 8);
  layout.ids_in = layout.keys_out + round_up(size_t(n) * 8);
  layout.ids_out = layout.ids_in + round_up(size_t(n) * 4);
  layout.prefix = layout.ids_out + round_up(size_t(n) * 4);
  layout.sort_temp = layout.prefix + round_up(size_t(n) * 8);
  layout.sort_temp_bytes = sort_bytes;
  layout.total = layout.sort_temp + round_up(sort_bytes) + kAlign;  // + room to align the base
  return layout;
}

// Ascending order of the key = descending order of the logit; -0 and +0 share a key (the host's
// comparison sees them equal, so their ids decide).
__device__ __forceinline__ uint32_t descending_key(float logit) {
  uint32_t bits = __float_as_uint(logit == 0.f ? 0.f : logit);
  bits = (bits & 0x80000000u) ? ~bits : bits | 0x80000000u;  // ascending with the float
  return ~bits;
}

// Stage: one (row, descending logit) key and the id of every element.
__global__ void sampling_keys_kernel(const float* __restrict__ logits, uint64_t* __restrict__ keys,
                                     int32_t* __restrict__ ids, int64_t vocab, int64_t total) {
  const int64_t index = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (index >= total) return;
  const int64_t row = index / vocab;
  keys[index] = (uint64_t(row) << 32) | descending_key(logits[index]);
  ids[index] = int32_t(index - row * vocab);
}

// The smallest value over the block (every thread gets it); `scratch` holds kWarps int64s.
__device__ int64_t block_min(int64_t value, int64_t* scratch) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  for (int offset = 16; offset > 0; offset >>= 1) value = min(value, __shfl_xor_sync(0xffffffffu, value, offset));
  __syncthreads();  // scratch may still be read by a previous call
  if (lane == 0) scratch[warp] = value;
  __syncthreads();
  value = lane < kWarps ? scratch[lane] : INT64_MAX;
  for (int offset = 16; offset > 0; offset >>= 1) value = min(value, __shfl_xor_sync(0xffffffffu, value, offset));
  return value;
}

// The sum of `value` over the threads before this one (in thread order); `scratch` holds kWarps doubles.
__device__ double block_exclusive_sum(double value, double* scratch) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  double inclusive = value;
  for (int offset = 1; offset < 32; offset <<= 1) {
    const double other = __shfl_up_sync(0xffffffffu, inclusive, offset);
    if (lane >= offset) inclusive += other;
  }
  double exclusive = __shfl_up_sync(0xffffffffu, inclusive, 1);
  if (lane == 0) exclusive = 0.0;
  __syncthreads();
  if (lane == 31) scratch[warp] = inclusive;
  __syncthreads();
  double before = 0.0;
  for (int w = 0; w < warp; ++w) before += scratch[w];
  return before + exclusive;
}

// Greedy: the first maximum of each row (one CTA per row).
__global__ void __launch_bounds__(kThreads)
greedy_kernel(const float* __restrict__ logits, int32_t* __restrict__ tokens, int64_t vocab) {
  __shared__ float best_values[kWarps];
  __shared__ int64_t best_ids[kWarps];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const float* row = logits + int64_t(blockIdx.x) * vocab;
  float best = -INFINITY;
  int64_t best_id = INT64_MAX;
  for (int64_t i = threadIdx.x; i < vocab; i += kThreads)
    if (best_id == INT64_MAX || row[i] > best) best = row[i], best_id = i;
  // A candidate wins with a larger value, or the same value and a lower id.
  auto merge = [&](float value, int64_t id) {
    if (id != INT64_MAX && (best_id == INT64_MAX || value > best || (value == best && id < best_id)))
      best = value, best_id = id;
  };
  for (int offset = 16; offset > 0; offset >>= 1) {
    const float value = __shfl_xor_sync(0xffffffffu, best, offset);
    const int64_t id = __shfl_xor_sync(0xffffffffu, best_id, offset);
    merge(value, id);
  }
  if (lane == 0) best_values[warp] = best, best_ids[warp] = best_id;
  __syncthreads();
  if (threadIdx.x == 0) {
    for (int w = 1; w < kWarps; ++w) merge(best_values[w], best_ids[w]);
    tokens[blockIdx.x] = int32_t(best_id);
  }
}

// One CTA per row over its sorted candidates (ids ascending within equal logits):
//   prefix[i] = sum of p_j for j <= i, p_j = exp((l_j - l_0) / temperature), j < keep (top-k);
//   top-p: keep = the first i + 1 with prefix[i] / total >= top_p;
//   draw:  the first i < keep with prefix[i] >= uniform(0, prefix[keep - 1]).
__global__ void __launch_bounds__(kThreads)
sample_rows_kernel(const float* __restrict__ logits, const int32_t* __restrict__ sorted_ids,
                   double* __restrict__ prefix_all, int32_t* __restrict__ tokens, int64_t vocab,
                   SamplingParams params) {
  __shared__ double sum_scratch[kWarps];
  __shared__ int64_t min_scratch[kWarps];
  const int64_t row = blockIdx.x;
  const float* l = logits + row * vocab;
  const int32_t* ids = sorted_ids + row * vocab;
  double* prefix = prefix_all + row * vocab;
  const int64_t candidates = params.top_k > 0 ? min(vocab, params.top_k) : vocab;
  const double top = l[ids[0]];

  // Stage: each thread's contiguous run of candidates, summed in order, then offset by the runs
  // before it.
  const int64_t run = ceil_div(candidates, kThreads);
  const int64_t begin = min(int64_t(threadIdx.x) * run, candidates), end = min(begin + run, candidates);
  double local = 0.0;
  for (int64_t i = begin; i < end; ++i) {
    local += exp((double(l[ids[i]]) - top) / params.temperature);
    prefix[i] = local;
  }
  const double before = block_exclusive_sum(local, sum_scratch);
  for (int64_t i = begin; i < end; ++i) prefix[i] += before;
  __syncthreads();  // every prefix is written (global memory, visible within the block)
  const double total = prefix[candidates - 1];

  // Stage: the top-p cut (prefix is non-decreasing, so each run's first hit is its only candidate).
  int64_t cut = INT64_MAX;
  for (int64_t i = begin; i < end; ++i)
    if (prefix[i] / total >= params.top_p) {
      cut = i;
      break;
    }
  cut = block_min(cut, min_scratch);
  const int64_t keep = cut == INT64_MAX ? candidates : cut + 1;

  // Stage: the draw.
  const double target = philox::uniform_at(params.seed, params.draw, 0.0, prefix[keep - 1]);
  int64_t chosen = INT64_MAX;
  for (int64_t i = begin; i < min(end, keep); ++i)
    if (prefix[i] >= target) {
      chosen = i;
      break;
    }
  chosen = block_min(chosen, min_scratch);
  if (threadIdx.x == 0) tokens[row] = ids[chosen == INT64_MAX ? keep - 1 : chosen];
}

}  // namespace

size_t sample_tokens_workspace_bytes(int64_t batch, int64_t vocab, const SamplingParams& params) {
  if (params.temperature <= 0 || batch == 0 || vocab == 0) return 0;
  return layout_for(batch, vocab).total;
}

void sample_tokens(const float* logits, int32_t* tokens, int64_t batch, int64_t vocab, const SamplingParams& params,
                   void* workspace, cudaStream_t stream) {
  if (batch == 0) return;
  BRAID_CHECK(vocab >= 1 && vocab <= INT32_MAX, "sample_tokens: vocab ", vocab, " out of range 1..", INT32_MAX);
  BRAID_CHECK(batch <= 65535, "sample_tokens: batch ", batch, " exceeds the grid");
  if (params.temperature <= 0) {
    greedy_kernel<<<unsigned(batch), kThreads, 0, stream>>>(logits, tokens, vocab);
    CUDA_CHECK_LAST_LAUNCH();
    return;
  }
  const Layout layout = layout_for(batch, vocab);
  const uintptr_t raw = reinterpret_cast<uintptr_t>(workspace);
  char* base = reinterpret_cast<char*>((raw + kAlign - 1) / kAlign * kAlign);
  auto* keys_in = reinterpret_cast<uint64_t*>(base + layout.keys_in);
  auto* keys_out = reinterpret_cast<uint64_t*>(base + layout.keys_out);
  auto* ids_in = reinterpret_cast<int32_t*>(base + layout.ids_in);
  auto* ids_out = reinterpret_cast<int32_t*>(base + layout.ids_out);
  auto* prefix = reinterpret_cast<double*>(base + layout.prefix);
  const int64_t total = batch * vocab;
  sampling_keys_kernel<<<unsigned(ceil_div(total, 256)), 256, 0, stream>>>(logits, keys_in, ids_in, vocab, total);
  CUDA_CHECK_LAST_LAUNCH();
  // Stage: sort every row's candidates (stable: equal logits keep ascending ids).
  size_t sort_bytes = layout.sort_temp_bytes;
  CUDA_CHECK(cub::DeviceRadixSort::SortPairs(base + layout.sort_temp, sort_bytes, keys_in, keys_out, ids_in, ids_out,
                                             total, 0, 32 + row_bits(batch), stream));
  sample_rows_kernel<<<unsigned(batch), kThreads, 0, stream>>>(logits, ids_out, prefix, tokens, vocab, params);
  CUDA_CHECK_LAST_LAUNCH();
}

}  // namespace braid::kernels::cuda
