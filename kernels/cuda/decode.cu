#include "kernels/cuda/decode.h"

#include <algorithm>
#include <cmath>
#include <cstdint>

#include "kernels/cuda/common.cuh"
#include "kernels/cuda/launch.h"
#include "kernels/cuda/mma.cuh"

namespace braid::kernels::cuda {

namespace {

constexpr int kThreads = 128;
constexpr int kWarps = kThreads / 32;

// Flash-decoding cache attention (KERNELS.md 6.3). Tiling strategy:
// - Grid (split, kv head x head block, query row): a CTA scans one split of its row's visible slots
//   [0, query slot] for up to kMaxHeadsPerCta query heads of one GQA group (all of it when the group
//   is that small), so every K/V byte is read once per row and head block. Splits are cut from the
//   row's own length (on the device), so short rows in a long cache still spread over every split.
// - The split walks tiles of cache_attention_tile<T>() slots (64 bf16 or 32 fp32 ones), double
//   buffered in shared memory: 16-byte cp.async copies of the next tile fly while this one computes.
// - S = scale q Kᵀ: kParts adjacent threads per key, each over a strided share of the key's 16-byte
//   chunks for all heads at once (the chunk is read once, q comes from shared memory), combined by
//   shuffles. K rows are padded so that those 16-byte reads are free of bank conflicts.
// - Online softmax: one warp per head over the tile's scores (fp32 max, rescale, exp-sum).
// - O += P V: thread (key group, chunk of Dv) accumulates its chunk for all heads in registers over
//   the keys of its group; at the end the key groups are summed in a fixed order through shared
//   memory. One split writes the normalized row; several write partials and an LSE to be merged.
// Dims that are not whole 16-byte chunks (or unaligned caches) take the same path one element at a
// time, with plain loads instead of cp.async.
constexpr int kMaxHeadsPerCta = 8;
constexpr int kStages = 2;
// A full cache gives each split between these many slots; beyond that, splits target kTargetCtas
// (four CTAs per SM on the 132 SMs of an H100 or H200), enough to keep HBM busy.
constexpr int64_t kMinSplitSlots = 128, kMaxSplitSlots = 512;
constexpr int64_t kTargetCtas = 4 * 132;
constexpr size_t kMaxSharedBytes = 227 * 1024;  // the sm_90 opt-in limit per block

// Slots per tile: 64 of bf16 (kParts = 2 threads per key) or 32 of fp32 (kParts = 4).
template <typename T>
constexpr int cache_attention_tile() {
  return sizeof(T) == 2 ? 64 : 32;
}

// What the host derives from the dims (and the pointers' alignment) for one launch.
struct CacheAttentionPlan {
  int64_t splits = 1;
  int group = 1;        // query heads per kv head
  int head_blocks = 1;  // CTAs per (split, kv head, row): ceil(group / heads per CTA)
  int k_stride = 0;     // elements between K rows in shared memory (padded against bank conflicts)
  int key_groups = 1;   // P·V: threads that share one chunk of Dv, each over every key_groups-th key
  int kv_bytes = 0;     // the shared K/V tiles (reused for the key groups' partial outputs)
};

__device__ __forceinline__ bool key_visible(int64_t t, int64_t s, int64_t window, int64_t sink) {
  return s <= t && (window == 0 || t - s < window || s < sink);
}

// kVec elements global -> shared: one 16-byte cp.async, or a plain element copy.
template <typename T, int kVec>
__device__ __forceinline__ void copy_chunk(T* shared_dst, const T* global_src) {
  if constexpr (kVec * sizeof(T) == 16) {
    cp_async_16(smem_address(shared_dst), global_src, 16);
  } else {
#pragma unroll
    for (int v = 0; v < kVec; ++v) shared_dst[v] = global_src[v];
  }
}

// At least 3 CTAs per SM, about what their shared memory allows; the bound (170 registers) also
// keeps the 8-head bf16 accumulators (64 floats per thread) from spilling.
template <typename T, int kHeads, int kVec>
__global__ void __launch_bounds__(kThreads, 3)
cache_attention_kernel(const T* __restrict__ q, const T* __restrict__ k_cache, const T* __restrict__ v_cache,
                       const int32_t* __restrict__ lengths, T* __restrict__ out, float* __restrict__ partial_o,
                       float* __restrict__ partial_lse, CacheAttentionDims dims, CacheAttentionPlan plan,
                       int64_t window, int64_t sink, float scale) {
  start_after_prior_grids();  // launched with launch_dependent (launch.h)
  constexpr int kTile = cache_attention_tile<T>(), kParts = kThreads / kTile;
  extern __shared__ __align__(16) unsigned char shared[];
  const int Dk = int(dims.qk_dim), Dv = int(dims.v_dim);
  const int k_chunks = Dk / kVec, v_chunks = Dv / kVec;
  // Shared memory: [K tiles | V tiles] (kv_bytes, later the key groups' partial outputs), then q,
  // the tile's scores (then probabilities), and the running max / sum / rescale of each head.
  T* k_tiles = reinterpret_cast<T*>(shared);                     // kStages x kTile x k_stride
  T* v_tiles = k_tiles + kStages * kTile * plan.k_stride;        // kStages x kTile x Dv
  float* group_out = reinterpret_cast<float*>(shared);           // key_groups x kHeads x Dv
  float* q_s = reinterpret_cast<float*>(shared + plan.kv_bytes);  // kHeads x Dk
  float* score_s = q_s + kHeads * Dk;                            // kHeads x kTile
  float* max_s = score_s + kHeads * kTile;
  float* sum_s = max_s + kHeads;
  float* rescale_s = sum_s + kHeads;

  const int64_t split = blockIdx.x, row = blockIdx.z;
  const int64_t kv = blockIdx.y / plan.head_blocks, first_head = (blockIdx.y % plan.head_blocks) * kHeads;
  const int heads_here = min(kHeads, plan.group - int(first_head));
  const int64_t b = row / dims.queries, t = row % dims.queries;
  const int64_t out_row = row * dims.q_heads + kv * plan.group + first_head;  // (row, local head 0)
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;

  // This split of the row's visible slots [0, query_slot]: tile-aligned, cut from the row's length.
  const int64_t query_slot = int64_t(lengths[b]) - dims.queries + t;
  const int64_t visible_end = max(int64_t(0), min(query_slot + 1, dims.capacity));
  const int64_t per_split = ceil_div(ceil_div(visible_end, plan.splits), kTile) * kTile;
  const int64_t begin = split * per_split, end = min(begin + per_split, visible_end);
  const T* keys = k_cache + (b * dims.kv_heads + kv) * dims.capacity * Dk;
  const T* values = v_cache + (b * dims.kv_heads + kv) * dims.capacity * Dv;

  // Stage: load q of this CTA's heads (widened; heads past the group read as 0 and are not written).
  for (int i = threadIdx.x; i < kHeads * Dk; i += kThreads)
    q_s[i] = i < heads_here * Dk ? to_float(q[out_row * Dk + i]) : 0.f;
  if (threadIdx.x < kHeads) {
    max_s[threadIdx.x] = -INFINITY;
    sum_s[threadIdx.x] = 0.f;
  }

  // The first tile at or after `from` holding a visible slot: with a window, the tiles between the
  // sink and the window's oldest slot are skipped whole. `from` is tile-aligned; the result too.
  auto next_tile = [&](int64_t from) -> int64_t {
    if (window == 0 || from < sink) return from;
    const int64_t oldest = query_slot - window + 1;
    return oldest <= from ? from : from + (oldest - from) / kTile * kTile;
  };
  // Stage: load K/V tile (slots [first, first + n)) into `stage`; rows are contiguous in the cache.
  auto issue_tile = [&](int64_t first, int stage) {
    const int n = int(min(int64_t(kTile), end - first));
    const T* k_src = keys + first * Dk;
    const T* v_src = values + first * Dv;
    T* k_dst = k_tiles + stage * kTile * plan.k_stride;
    T* v_dst = v_tiles + stage * kTile * Dv;
    for (int f = threadIdx.x; f < n * k_chunks; f += kThreads) {
      const int j = f / k_chunks, c = f - j * k_chunks;
      copy_chunk<T, kVec>(k_dst + j * plan.k_stride + c * kVec, k_src + int64_t(f) * kVec);
    }
    for (int f = threadIdx.x; f < n * v_chunks; f += kThreads)
      copy_chunk<T, kVec>(v_dst + f * kVec, v_src + int64_t(f) * kVec);
  };

  // P·V ownership: chunk `value_chunk` of Dv for keys value_group, value_group + key_groups, ...
  const int value_group = threadIdx.x / v_chunks, value_chunk = threadIdx.x - value_group * v_chunks;
  const bool owns_values = value_group < plan.key_groups;
  float acc[kHeads][kVec];
#pragma unroll
  for (int h = 0; h < kHeads; ++h)
#pragma unroll
    for (int v = 0; v < kVec; ++v) acc[h][v] = 0.f;

  int64_t tile = next_tile(begin);
  if (tile < end) issue_tile(tile, 0);
  cp_async_commit();
  for (int stage = 0; tile < end; stage ^= 1) {
    const int64_t next = next_tile(tile + kTile);
    if (next < end) issue_tile(next, stage ^ 1);
    cp_async_commit();
    cp_async_wait<1>();  // every group but the newest (the next tile's) has landed
    __syncthreads();     // ... for every thread's copies; q and the running stats are written too
    const int n = int(min(int64_t(kTile), end - tile));

    // Stage: S = scale q Kᵀ for every head; thread (key j, part) takes chunks part, part + kParts, ...
    {
      const int j = threadIdx.x / kParts, part = threadIdx.x % kParts;
      float dot[kHeads];
#pragma unroll
      for (int h = 0; h < kHeads; ++h) dot[h] = 0.f;
      if (j < n) {
        const T* k_row = k_tiles + (stage * kTile + j) * plan.k_stride;
        for (int c = part; c < k_chunks; c += kParts) {
          float key[kVec];
          load_floats<T, kVec>(k_row + c * kVec, key);
#pragma unroll
          for (int h = 0; h < kHeads; ++h) {
            float query[kVec];
            load_floats<float, kVec>(q_s + h * Dk + c * kVec, query);
#pragma unroll
            for (int v = 0; v < kVec; ++v) dot[h] += query[v] * key[v];
          }
        }
      }
      // A key's kParts threads are adjacent lanes: a fixed butterfly combines their partial dots.
#pragma unroll
      for (int h = 0; h < kHeads; ++h)
#pragma unroll
        for (int offset = kParts / 2; offset > 0; offset >>= 1)
          dot[h] += __shfl_xor_sync(0xffffffffu, dot[h], offset);
      if (part == 0) {
        const bool visible = j < n && key_visible(query_slot, tile + j, window, sink);
#pragma unroll
        for (int h = 0; h < kHeads; ++h) score_s[h * kTile + j] = visible ? dot[h] * scale : -INFINITY;
      }
    }
    __syncthreads();

    // Stage: online softmax, one warp per head: new maximum, probabilities, rescale of the old sum.
    for (int h = warp; h < kHeads; h += kWarps) {
      float tile_max = -INFINITY;
      for (int j = lane; j < kTile; j += 32) tile_max = fmaxf(tile_max, score_s[h * kTile + j]);
      tile_max = warp_max(tile_max);
      const float old_max = max_s[h], new_max = fmaxf(old_max, tile_max);
      // While nothing is visible the maximum stays -inf; subtract 0 then, never (-inf) - (-inf).
      const float base = new_max == -INFINITY ? 0.f : new_max;
      float tile_sum = 0.f;
      for (int j = lane; j < kTile; j += 32) {
        const float p = expf(score_s[h * kTile + j] - base);
        score_s[h * kTile + j] = p;
        tile_sum += p;
      }
      tile_sum = warp_sum(tile_sum);  // its shuffles also order every lane's read of max_s first
      if (lane == 0) {
        const float rescale = expf(old_max - base);
        rescale_s[h] = rescale;
        sum_s[h] = sum_s[h] * rescale + tile_sum;
        max_s[h] = new_max;
      }
    }
    __syncthreads();

    // Stage: O = rescale O + P V over this thread's keys, one 16-byte chunk of V per key.
    if (owns_values) {
#pragma unroll
      for (int h = 0; h < kHeads; ++h) {
        const float rescale = rescale_s[h];
#pragma unroll
        for (int v = 0; v < kVec; ++v) acc[h][v] *= rescale;
      }
      const T* v_tile = v_tiles + stage * kTile * Dv + value_chunk * kVec;
      for (int j = value_group; j < n; j += plan.key_groups) {
        float value[kVec];
        load_floats<T, kVec>(v_tile + j * Dv, value);
#pragma unroll
        for (int h = 0; h < kHeads; ++h) {
          const float p = score_s[h * kTile + j];
#pragma unroll
          for (int v = 0; v < kVec; ++v) acc[h][v] += p * value[v];
        }
      }
    }
    __syncthreads();  // this stage's buffers and scores are free for the next tile
    tile = next;
  }
  cp_async_wait<0>();

  // Stage: sum the key groups' outputs in a fixed order (through the K/V region), normalize, write.
  if (owns_values)
#pragma unroll
    for (int h = 0; h < kHeads; ++h)
      store_floats<float, kVec>(group_out + (value_group * kHeads + h) * Dv + value_chunk * kVec, acc[h]);
  __syncthreads();
  for (int e = threadIdx.x; e < heads_here * Dv; e += kThreads) {
    const int h = e / Dv, d = e - h * Dv;
    float o = 0.f;
    for (int g = 0; g < plan.key_groups; ++g) o += group_out[(g * kHeads + h) * Dv + d];
    const float total = sum_s[h];
    const float normalized = total > 0.f ? o / total : 0.f;  // an empty split contributes nothing
    if (plan.splits == 1)
      out[(out_row + h) * Dv + d] = from_float<T>(normalized);
    else
      partial_o[((out_row + h) * plan.splits + split) * Dv + d] = normalized;
  }
  if (plan.splits > 1 && int(threadIdx.x) < heads_here) {
    const float total = sum_s[threadIdx.x];
    partial_lse[(out_row + threadIdx.x) * plan.splits + split] =
        total > 0.f ? max_s[threadIdx.x] + logf(total) : -INFINITY;
  }
}

// Stage: merge the splits of one (row, query head): LSE = ln Σ e^(LSE_s), O = Σ e^(LSE_s - LSE) O_s.
template <typename T>
__global__ void __launch_bounds__(kThreads)
cache_attention_merge_kernel(const float* __restrict__ partial_o, const float* __restrict__ partial_lse,
                             T* __restrict__ out, int64_t splits, int64_t Dv) {
  start_after_prior_grids();  // launched with launch_dependent (launch.h)
  const int64_t slot = blockIdx.x;  // row * Hq + h
  const float* lse = partial_lse + slot * splits;
  const int lane = threadIdx.x & 31;
  // Each warp finds the largest LSE and the normalizer itself (a fixed order, no shared memory).
  float top = -INFINITY;
  for (int64_t s = lane; s < splits; s += 32) top = fmaxf(top, lse[s]);
  top = warp_max(top);
  float total = 0.f;
  for (int64_t s = lane; s < splits; s += 32) total += lse[s] == -INFINITY ? 0.f : expf(lse[s] - top);
  total = warp_sum(total);
  for (int64_t d = threadIdx.x; d < Dv; d += kThreads) {
    float sum = 0.f;
#pragma unroll 4
    for (int64_t s = 0; s < splits; ++s) {
      const float weight = lse[s] == -INFINITY ? 0.f : expf(lse[s] - top);
      sum += weight * partial_o[(slot * splits + s) * Dv + d];
    }
    out[slot * Dv + d] = from_float<T>(sum / total);
  }
}

template <typename T>
__global__ void kv_cache_write_kernel(T* __restrict__ cache, const T* __restrict__ values,
                                      const int32_t* __restrict__ slots, int64_t time, int64_t heads,
                                      int64_t capacity, int64_t dim, int64_t total) {
  start_after_prior_grids();  // launched with launch_dependent (launch.h)
  const int64_t index = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (index >= total) return;
  const int64_t d = index % dim, h = (index / dim) % heads, bt = index / (dim * heads);
  const int64_t slot = slots[bt];
  if (slot < 0) return;
  const int64_t b = bt / time;
  cache[((b * heads + h) * capacity + slot) * dim + d] = values[index];
}

struct RopeFrequencies {
  double value[kDecodeRopeMaxHalfDim];
};

template <typename T>
__global__ void rope_at_positions_kernel(const T* __restrict__ x, T* __restrict__ out, RopeFrequencies frequencies,
                                         const int32_t* __restrict__ positions, int64_t time, int64_t heads,
                                         int64_t head_dim, int64_t total) {
  start_after_prior_grids();  // launched with launch_dependent (launch.h)
  const int64_t index = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;  // over (b, t, h, i < D/2)
  if (index >= total) return;
  const int64_t half = head_dim / 2;
  const int64_t i = index % half, bth = index / half, bt = bth / heads;
  const int64_t b = bt / time, t = bt % time;
  // Angles, cosines and sines in double, rounded to float, as the CPU twin.
  const double angle = double(positions[b] + t) * frequencies.value[i];
  const float c = float(cos(angle)), s = float(sin(angle));
  const int64_t base = bth * head_dim;
  const float first = to_float(x[base + i]), second = to_float(x[base + i + half]);
  out[base + i] = from_float<T>(first * c - second * s);
  out[base + i + half] = from_float<T>(second * c + first * s);
}

__global__ void decode_step_indices_kernel(int32_t* __restrict__ indices, int64_t batch, int64_t window, int64_t sink,
                                           int64_t window_capacity) {
  const int64_t b = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (b >= batch) return;
  const int64_t length = indices[4 * batch + b];
  indices[b] = int32_t(length);
  indices[batch + b] = int32_t(length + 1);
  indices[2 * batch + b] = int32_t(window == 0 || length < sink ? length : sink + (length - sink) % window);
  indices[3 * batch + b] = int32_t(min(length + 1, window_capacity));
  indices[4 * batch + b] = int32_t(length + 1);
}

__device__ __forceinline__ float softplus(float u) { return u > 20.f ? u : log1pf(expf(u)); }

template <typename T>
__global__ void conv_state_update_kernel(T* __restrict__ state, const T* __restrict__ x, int64_t x_row_stride,
                                         const float* __restrict__ weight, const float* __restrict__ bias,
                                         T* __restrict__ out, int64_t channels, int64_t width, bool apply_silu,
                                         int64_t total) {
  start_after_prior_grids();  // launched with launch_dependent (launch.h)
  const int64_t index = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;  // over (b, c)
  if (index >= total) return;
  const int64_t b = index / channels, c = index % channels, kept = width - 1;
  T* st = state + index * kept;
  const float* w = weight + c * width;
  const T xt = x[b * x_row_stride + c];
  float v = bias[c];
  for (int64_t k = 0; k < kept; ++k) v += w[k] * to_float(st[k]);
  v += w[kept] * to_float(xt);
  out[index] = from_float<T>(apply_silu ? v / (1.f + expf(-v)) : v);
  for (int64_t k = 0; k + 1 < kept; ++k) st[k] = st[k + 1];
  if (kept > 0) st[kept - 1] = xt;
}

constexpr int kSsmRowsPerWarp = 4;
constexpr int kSsmMaxStatePerLane = 4;  // d_state up to 128 keeps a warp's rows in registers

// Grid (P-blocks, H, B): each warp updates kSsmRowsPerWarp rows p of one head's state, lanes across N.
// With kPerLane > 0 (N <= 32 kPerLane) a warp loads all its rows' states before updating any, so
// their memory latencies overlap; kPerLane == 0 walks N in steps of 32, row by row.
template <typename T, int kPerLane>
__global__ void __launch_bounds__(kThreads)
ssm_state_update_kernel(float* __restrict__ state, const T* __restrict__ x, const T* __restrict__ dt_raw,
                        const float* __restrict__ dt_bias, const float* __restrict__ A_log, const T* __restrict__ B,
                        const T* __restrict__ C, const float* __restrict__ D, T* __restrict__ y, SsmStepDims dims) {
  start_after_prior_grids();  // launched with launch_dependent (launch.h)
  const int64_t h = blockIdx.y, b = blockIdx.z;
  const int64_t H = dims.heads, P = dims.head_dim, N = dims.state;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const float delta =
      fminf(fmaxf(softplus(to_float(dt_raw[b * dims.dt_row_stride + h]) + dt_bias[h]), dims.dt_min), dims.dt_max);
  const float alpha = expf(delta * -expf(A_log[h]));
  const int64_t g = h / (H / dims.groups);
  const T* Bg = B + b * dims.B_row_stride + g * N;
  const T* Cg = C + b * dims.C_row_stride + g * N;
  const int64_t first_row = (int64_t(blockIdx.x) * kWarps + warp) * kSsmRowsPerWarp;
  const int64_t rows_left = P - first_row;
  const int rows = rows_left <= 0 ? 0 : int(rows_left < kSsmRowsPerWarp ? rows_left : kSsmRowsPerWarp);
  float* rows_state = state + ((b * H + h) * P + first_row) * N;
  float xp[kSsmRowsPerWarp];
#pragma unroll
  for (int r = 0; r < kSsmRowsPerWarp; ++r) xp[r] = r < rows ? to_float(x[b * dims.x_row_stride + h * P + first_row + r]) : 0.f;
  float dot[kSsmRowsPerWarp] = {};
  if constexpr (kPerLane > 0) {
    float old[kSsmRowsPerWarp][kPerLane], bn[kPerLane], cn[kPerLane];
#pragma unroll
    for (int i = 0; i < kPerLane; ++i) {
      const int64_t n = lane + 32 * i;
      bn[i] = n < N ? to_float(Bg[n]) : 0.f;
      cn[i] = n < N ? to_float(Cg[n]) : 0.f;
#pragma unroll
      for (int r = 0; r < kSsmRowsPerWarp; ++r) old[r][i] = r < rows && n < N ? rows_state[r * N + n] : 0.f;
    }
#pragma unroll
    for (int r = 0; r < kSsmRowsPerWarp; ++r) {
#pragma unroll
      for (int i = 0; i < kPerLane; ++i) {
        const int64_t n = lane + 32 * i;
        const float updated = alpha * old[r][i] + delta * xp[r] * bn[i];
        if (r < rows && n < N) rows_state[r * N + n] = updated;
        dot[r] += updated * cn[i];
      }
    }
  } else {
#pragma unroll
    for (int r = 0; r < kSsmRowsPerWarp; ++r) {
      for (int64_t n = lane; r < rows && n < N; n += 32) {
        const float updated = alpha * rows_state[r * N + n] + delta * xp[r] * to_float(Bg[n]);
        rows_state[r * N + n] = updated;
        dot[r] += updated * to_float(Cg[n]);
      }
    }
  }
#pragma unroll
  for (int r = 0; r < kSsmRowsPerWarp; ++r) {
    const float total = warp_sum(dot[r]);
    if (lane == 0 && r < rows) y[(b * H + h) * P + first_row + r] = from_float<T>(total + D[h] * xp[r]);
  }
}

int cache_attention_heads_per_cta(int64_t group) {
  int heads = 1;
  while (heads < group && heads < kMaxHeadsPerCta) heads *= 2;
  return heads;
}

// Elements of K per shared-memory row: the row's 16-byte chunks padded so that a row's stride is
// an odd multiple of kParts chunks, so the kParts threads of 4 (bf16) or 2 (fp32) consecutive keys
// read 8 distinct 16-byte bank groups per phase.
int cache_attention_k_stride(int64_t qk_dim, int vec, size_t element_bytes, int parts) {
  if (vec == 1) return int(qk_dim);
  const int64_t row_bytes = qk_dim * int64_t(element_bytes), period = 32 * parts;
  const int64_t pad = ((16 * parts - row_bytes % period) + period) % period;
  return int((row_bytes + pad) / int64_t(element_bytes));
}

template <typename T, int kHeads, int kVec>
void launch_cache_attention(const void* q, const void* k_cache, const void* v_cache, const int32_t* lengths,
                            void* out, float* partial_o, float* partial_lse, const CacheAttentionDims& dims,
                            CacheAttentionPlan plan, int64_t window, int64_t sink, float scale,
                            cudaStream_t stream) {
  constexpr int kTile = cache_attention_tile<T>(), kParts = kThreads / kTile;
  const int64_t v_chunks = dims.v_dim / kVec;
  BRAID_CHECK(v_chunks <= kThreads, "cache_attention: v head dim ", dims.v_dim, " exceeds ", kThreads * kVec,
              kVec == 1 ? " (dims that are not whole 16-byte chunks take the element path)" : "");
  plan.k_stride = cache_attention_k_stride(dims.qk_dim, kVec, sizeof(T), kParts);
  plan.key_groups = int(kThreads / v_chunks);
  const int64_t tile_bytes = int64_t(kStages) * kTile * (plan.k_stride + dims.v_dim) * int64_t(sizeof(T));
  const int64_t group_out_bytes = int64_t(plan.key_groups) * kHeads * dims.v_dim * int64_t(sizeof(float));
  plan.kv_bytes = int(ceil_div(std::max(tile_bytes, group_out_bytes), 16) * 16);
  const size_t shared_bytes =
      size_t(plan.kv_bytes) + size_t(kHeads * (dims.qk_dim + kTile + 3)) * sizeof(float);
  BRAID_CHECK(shared_bytes <= kMaxSharedBytes, "cache_attention: head dims ", dims.qk_dim, " and ", dims.v_dim,
              " need ", shared_bytes, " bytes of shared memory per CTA, more than ", kMaxSharedBytes);
  auto kernel = cache_attention_kernel<T, kHeads, kVec>;
  CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(shared_bytes)));
  const dim3 grid(unsigned(plan.splits), unsigned(dims.kv_heads * plan.head_blocks),
                  unsigned(dims.batch * dims.queries));
  launch_dependent(kernel, grid, dim3(kThreads), shared_bytes, stream, static_cast<const T*>(q),
                   static_cast<const T*>(k_cache), static_cast<const T*>(v_cache), lengths, static_cast<T*>(out),
                   partial_o, partial_lse, dims, plan, window, sink, scale);
}

}  // namespace

int64_t cache_attention_splits(const CacheAttentionDims& dims) {
  const int64_t rows = dims.batch * dims.queries;
  if (rows <= 0 || dims.kv_heads <= 0 || dims.q_heads <= 0 || dims.capacity <= 0) return 1;
  const int64_t group = dims.q_heads / dims.kv_heads;
  const int64_t ctas_per_split = rows * dims.kv_heads * ceil_div(group, cache_attention_heads_per_cta(group));
  const int64_t fewest = ceil_div(dims.capacity, kMaxSplitSlots), most = ceil_div(dims.capacity, kMinSplitSlots);
  return std::clamp(ceil_div(kTargetCtas, ctas_per_split), fewest, most);
}

size_t cache_attention_workspace_floats(const CacheAttentionDims& dims) {
  const int64_t splits = cache_attention_splits(dims);
  if (splits == 1) return 0;
  return size_t(dims.batch * dims.queries * dims.q_heads * splits * (dims.v_dim + 1));
}

void cache_attention(const void* q, const void* k_cache, const void* v_cache, const int32_t* lengths, void* out,
                     const CacheAttentionDims& dims, int64_t window, int64_t sink, float scale, float* workspace,
                     DType dtype, cudaStream_t stream) {
  const int64_t rows = dims.batch * dims.queries;
  if (rows == 0 || dims.q_heads == 0 || dims.v_dim == 0) return;
  BRAID_CHECK(dims.kv_heads > 0 && dims.q_heads % dims.kv_heads == 0, "cache_attention: ", dims.q_heads,
              " query heads do not group over ", dims.kv_heads, " kv heads");
  CacheAttentionPlan plan;
  plan.splits = cache_attention_splits(dims);
  plan.group = int(dims.q_heads / dims.kv_heads);
  const int heads_per_cta = cache_attention_heads_per_cta(plan.group);
  plan.head_blocks = int(ceil_div(plan.group, heads_per_cta));
  BRAID_CHECK(rows <= 65535 && dims.kv_heads * plan.head_blocks <= 65535, "cache_attention: ", rows,
              " query rows x ", dims.kv_heads, " kv heads exceed the grid; prefill in smaller chunks");
  BRAID_CHECK(plan.splits == 1 || workspace != nullptr, "cache_attention: ", plan.splits,
              " splits need a workspace of cache_attention_workspace_floats() floats");
  float* partial_o = workspace;
  float* partial_lse = plan.splits > 1 ? workspace + rows * dims.q_heads * plan.splits * dims.v_dim : nullptr;
  const bool caches_aligned =
      reinterpret_cast<uintptr_t>(k_cache) % 16 == 0 && reinterpret_cast<uintptr_t>(v_cache) % 16 == 0;
  dispatch_activation("cache_attention", dtype, [&]<typename T>() {
    constexpr int kVector = int(16 / sizeof(T));
    const bool vectorized = caches_aligned && dims.qk_dim % kVector == 0 && dims.v_dim % kVector == 0;
    auto launch = [&]<int kHeads>() {
      if (vectorized)
        launch_cache_attention<T, kHeads, kVector>(q, k_cache, v_cache, lengths, out, partial_o, partial_lse, dims,
                                                   plan, window, sink, scale, stream);
      else
        launch_cache_attention<T, kHeads, 1>(q, k_cache, v_cache, lengths, out, partial_o, partial_lse, dims, plan,
                                             window, sink, scale, stream);
    };
    switch (heads_per_cta) {
      case 1: launch.template operator()<1>(); break;
      case 2: launch.template operator()<2>(); break;
      case 4: launch.template operator()<4>(); break;
      default: launch.template operator()<kMaxHeadsPerCta>(); break;
    }
    if (plan.splits > 1) {
      launch_dependent(cache_attention_merge_kernel<T>, dim3(unsigned(rows * dims.q_heads)), dim3(kThreads), 0,
                       stream, partial_o, partial_lse, static_cast<T*>(out), plan.splits, dims.v_dim);
    }
  });
}

void kv_cache_write(void* cache, const void* values, const int32_t* slots, int64_t batch, int64_t time,
                    int64_t heads, int64_t capacity, int64_t dim, DType dtype, cudaStream_t stream) {
  const int64_t total = batch * time * heads * dim;
  if (total == 0) return;
  dispatch_activation("kv_cache_write", dtype, [&]<typename T>() {
    launch_dependent(kv_cache_write_kernel<T>, dim3(unsigned(ceil_div(total, 256))), dim3(256), 0, stream,
                     static_cast<T*>(cache), static_cast<const T*>(values), slots, time, heads, capacity, dim, total);
  });
}

void rope_at_positions(const void* x, void* out, const double* inverse_frequencies, const int32_t* positions,
                       int64_t batch, int64_t time, int64_t heads, int64_t head_dim, DType dtype,
                       cudaStream_t stream) {
  const int64_t half = head_dim / 2, total = batch * time * heads * half;
  if (total == 0) return;
  BRAID_CHECK(half <= kDecodeRopeMaxHalfDim, "rope_at_positions: head_dim ", head_dim, " exceeds ",
              2 * kDecodeRopeMaxHalfDim);
  RopeFrequencies frequencies{};
  for (int64_t i = 0; i < half; ++i) frequencies.value[i] = inverse_frequencies[i];
  dispatch_activation("rope_at_positions", dtype, [&]<typename T>() {
    launch_dependent(rope_at_positions_kernel<T>, dim3(unsigned(ceil_div(total, 256))), dim3(256), 0, stream,
                     static_cast<const T*>(x), static_cast<T*>(out), frequencies, positions, time, heads, head_dim,
                     total);
  });
}

void conv_state_update(void* state, const void* x, int64_t x_row_stride, const float* weight, const float* bias,
                       void* out, int64_t batch, int64_t channels, int64_t width, bool apply_silu, DType dtype,
                       cudaStream_t stream) {
  const int64_t total = batch * channels;
  if (total == 0) return;
  dispatch_activation("conv_state_update", dtype, [&]<typename T>() {
    launch_dependent(conv_state_update_kernel<T>, dim3(unsigned(ceil_div(total, 256))), dim3(256), 0, stream,
                     static_cast<T*>(state), static_cast<const T*>(x), x_row_stride, weight, bias, static_cast<T*>(out),
                     channels, width, apply_silu, total);
  });
}

void decode_step_indices(int32_t* indices, int64_t batch, int64_t window, int64_t sink, int64_t window_capacity,
                         cudaStream_t stream) {
  if (batch == 0) return;
  decode_step_indices_kernel<<<unsigned(ceil_div(batch, 128)), 128, 0, stream>>>(indices, batch, window, sink,
                                                                                 window_capacity);
  CUDA_CHECK_LAST_LAUNCH();
}

void ssm_state_update(float* state, const void* x, const void* dt_raw, const float* dt_bias, const float* A_log,
                      const void* B, const void* C, const float* D, void* y, const SsmStepDims& dims, DType dtype,
                      cudaStream_t stream) {
  if (dims.batch == 0 || dims.heads == 0 || dims.head_dim == 0) return;
  const int64_t row_blocks = ceil_div(dims.head_dim, int64_t(kWarps) * kSsmRowsPerWarp);
  dispatch_activation("ssm_state_update", dtype, [&]<typename T>() {
    auto launch = [&]<int kPerLane>() {
      launch_dependent(ssm_state_update_kernel<T, kPerLane>,
                       dim3(unsigned(row_blocks), unsigned(dims.heads), unsigned(dims.batch)), dim3(kThreads), 0, stream,
                       state, static_cast<const T*>(x), static_cast<const T*>(dt_raw), dt_bias, A_log,
                       static_cast<const T*>(B), static_cast<const T*>(C), D, static_cast<T*>(y), dims);
    };
    switch (ceil_div(dims.state, 32)) {
      case 1: launch.template operator()<1>(); break;
      case 2: launch.template operator()<2>(); break;
      case 3:
      case kSsmMaxStatePerLane: launch.template operator()<kSsmMaxStatePerLane>(); break;
      default: launch.template operator()<0>(); break;
    }
  });
}

}  // namespace braid::kernels::cuda
