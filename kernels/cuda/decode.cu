#include "kernels/cuda/decode.h"

#include <cmath>

#include "kernels/cuda/common.cuh"

namespace braid::kernels::cuda {

namespace {

constexpr int kThreads = 128;
constexpr int kWarps = kThreads / 32;
// Keys scored per tile of a CTA's range (the tile's scores live in shared memory).
constexpr int kKeyTile = 256;
// CTAs worth filling the card with before splitting rows along the cache (two waves on 132 SMs).
constexpr int64_t kTargetCtas = 264;

__device__ __forceinline__ bool key_visible(int64_t t, int64_t s, int64_t window, int64_t sink) {
  return s <= t && (window == 0 || t - s < window || s < sink);
}

// One CTA: query row (b, t) x query head h x one split of the cache's slots. Online softmax over
// tiles of kKeyTile keys; with one split the normalized row goes straight to `out`, otherwise the
// normalized partial and its LSE go to the workspace for the merge.
template <typename T>
__global__ void __launch_bounds__(kThreads)
cache_attention_kernel(const T* __restrict__ q, const T* __restrict__ k_cache, const T* __restrict__ v_cache,
                       const int32_t* __restrict__ lengths, T* __restrict__ out, float* __restrict__ partial_o,
                       float* __restrict__ partial_lse, CacheAttentionDims dims, int64_t window, int64_t sink,
                       float scale, int64_t splits) {
  extern __shared__ float shared[];
  const int64_t Dk = dims.qk_dim, Dv = dims.v_dim, S = dims.capacity;
  float* q_s = shared;              // Dk
  float* score = q_s + Dk;          // kKeyTile
  float* scratch = score + kKeyTile;  // 32
  const int64_t split = blockIdx.x, h = blockIdx.y, row = blockIdx.z;
  const int64_t b = row / dims.queries, t = row % dims.queries;
  const int64_t kv = h / (dims.q_heads / dims.kv_heads);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int64_t query_slot = int64_t(lengths[b]) - dims.queries + t;
  const int64_t per_split = ceil_div(S, splits);
  const int64_t begin = split * per_split;
  const int64_t end = min(begin + per_split, query_slot + 1);

  // Stage: load q (widened to fp32).
  const T* q_row = q + (row * dims.q_heads + h) * Dk;
  for (int64_t i = threadIdx.x; i < Dk; i += kThreads) q_s[i] = to_float(q_row[i]);
  __syncthreads();

  const T* keys = k_cache + (b * dims.kv_heads + kv) * S * Dk;
  const T* values = v_cache + (b * dims.kv_heads + kv) * S * Dv;
  // Each thread owns output dims d = threadIdx.x + j * kThreads (Dv <= 4 * kThreads).
  float acc[4] = {0.f, 0.f, 0.f, 0.f};
  float running_max = -INFINITY, running_sum = 0.f;
  for (int64_t tile = begin; tile < end; tile += kKeyTile) {
    const int64_t tile_end = min(tile + int64_t(kKeyTile), end);
    // Stage: S = scale * q Kᵀ, one warp per key, lanes across Dk.
    float tile_max = -INFINITY;
    for (int64_t s = tile + warp; s < tile_end; s += kWarps) {
      float dot = -INFINITY;
      if (key_visible(query_slot, s, window, sink)) {
        float sum = 0.f;
        for (int64_t i = lane; i < Dk; i += 32) sum += q_s[i] * to_float(keys[s * Dk + i]);
        dot = warp_sum(sum) * scale;
      }
      if (lane == 0) score[s - tile] = dot;
      tile_max = fmaxf(tile_max, dot);
    }
    tile_max = block_max(tile_max, scratch);  // syncs: every score of the tile is written
    const float new_max = fmaxf(running_max, tile_max);
    if (new_max == -INFINITY) continue;  // nothing visible yet (uniform across the block)
    // Stage: online softmax, rescaling what was accumulated under the old maximum.
    const float rescale = running_max == -INFINITY ? 0.f : expf(running_max - new_max);
    float local_sum = 0.f;
    for (int64_t i = threadIdx.x; i < tile_end - tile; i += kThreads) {
      const float p = score[i] == -INFINITY ? 0.f : expf(score[i] - new_max);
      score[i] = p;
      local_sum += p;
    }
    const float tile_sum = block_sum(local_sum, scratch);  // syncs: every p of the tile is written
    running_sum = running_sum * rescale + tile_sum;
    running_max = new_max;
    // Stage: O += P V, threads across Dv (coalesced rows of V).
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const int64_t d = threadIdx.x + j * kThreads;
      if (d >= Dv) break;
      float sum = acc[j] * rescale;
      for (int64_t s = tile; s < tile_end; ++s) sum += score[s - tile] * to_float(values[s * Dv + d]);
      acc[j] = sum;
    }
    __syncthreads();  // the next tile overwrites score
  }

  const float inverse = running_sum > 0.f ? 1.f / running_sum : 0.f;
  if (splits == 1) {
    T* o = out + (row * dims.q_heads + h) * Dv;
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const int64_t d = threadIdx.x + j * kThreads;
      if (d < Dv) o[d] = from_float<T>(acc[j] * inverse);
    }
    return;
  }
  const int64_t slot = (row * dims.q_heads + h) * splits + split;
  float* o = partial_o + slot * Dv;
#pragma unroll
  for (int j = 0; j < 4; ++j) {
    const int64_t d = threadIdx.x + j * kThreads;
    if (d < Dv) o[d] = acc[j] * inverse;
  }
  if (threadIdx.x == 0) partial_lse[slot] = running_sum > 0.f ? running_max + logf(running_sum) : -INFINITY;
}

// Stage: merge the splits of one (row, head): LSE = ln Σ e^(LSE_s), O = Σ e^(LSE_s - LSE) O_s.
template <typename T>
__global__ void __launch_bounds__(kThreads)
cache_attention_merge_kernel(const float* __restrict__ partial_o, const float* __restrict__ partial_lse,
                             T* __restrict__ out, int64_t splits, int64_t Dv) {
  const int64_t slot = blockIdx.x;  // row * Hq + h
  const float* lse = partial_lse + slot * splits;
  float top = -INFINITY;
  for (int64_t s = 0; s < splits; ++s) top = fmaxf(top, lse[s]);
  float total = 0.f;
  for (int64_t s = 0; s < splits; ++s) total += lse[s] == -INFINITY ? 0.f : expf(lse[s] - top);
  for (int64_t d = threadIdx.x; d < Dv; d += kThreads) {
    float sum = 0.f;
    for (int64_t s = 0; s < splits; ++s)
      if (lse[s] != -INFINITY) sum += expf(lse[s] - top) * partial_o[(slot * splits + s) * Dv + d];
    out[slot * Dv + d] = from_float<T>(sum / total);
  }
}

template <typename T>
__global__ void kv_cache_write_kernel(T* __restrict__ cache, const T* __restrict__ values,
                                      const int32_t* __restrict__ slots, int64_t time, int64_t heads,
                                      int64_t capacity, int64_t dim, int64_t total) {
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
__global__ void conv_state_update_kernel(T* __restrict__ state, const T* __restrict__ x, const float* __restrict__ weight,
                                         const float* __restrict__ bias, T* __restrict__ out, int64_t channels,
                                         int64_t width, bool apply_silu, int64_t total) {
  const int64_t index = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;  // over (b, c)
  if (index >= total) return;
  const int64_t c = index % channels, kept = width - 1;
  T* st = state + index * kept;
  const float* w = weight + c * width;
  const T xt = x[index];
  float v = bias[c];
  for (int64_t k = 0; k < kept; ++k) v += w[k] * to_float(st[k]);
  v += w[kept] * to_float(xt);
  out[index] = from_float<T>(apply_silu ? v / (1.f + expf(-v)) : v);
  for (int64_t k = 0; k + 1 < kept; ++k) st[k] = st[k + 1];
  if (kept > 0) st[kept - 1] = xt;
}

constexpr int kSsmRowsPerWarp = 4;

// Grid (P-blocks, H, B): each warp updates kSsmRowsPerWarp rows p of one head's state, lanes across N.
template <typename T>
__global__ void __launch_bounds__(kThreads)
ssm_state_update_kernel(float* __restrict__ state, const T* __restrict__ x, const T* __restrict__ dt_raw,
                        const float* __restrict__ dt_bias, const float* __restrict__ A_log, const T* __restrict__ B,
                        const T* __restrict__ C, const float* __restrict__ D, T* __restrict__ y, SsmStepDims dims) {
  const int64_t h = blockIdx.y, b = blockIdx.z;
  const int64_t H = dims.heads, P = dims.head_dim, N = dims.state;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const float delta = fminf(fmaxf(softplus(to_float(dt_raw[b * H + h]) + dt_bias[h]), dims.dt_min), dims.dt_max);
  const float alpha = expf(delta * -expf(A_log[h]));
  const int64_t g = h / (H / dims.groups);
  const T* Bg = B + (b * dims.groups + g) * N;
  const T* Cg = C + (b * dims.groups + g) * N;
  const int64_t first_row = (int64_t(blockIdx.x) * kWarps + warp) * kSsmRowsPerWarp;
  for (int64_t p = first_row; p < min(first_row + kSsmRowsPerWarp, P); ++p) {
    const float xp = to_float(x[(b * H + h) * P + p]);
    float* s = state + ((b * H + h) * P + p) * N;
    float dot = 0.f;
    for (int64_t n = lane; n < N; n += 32) {
      const float updated = alpha * s[n] + delta * xp * to_float(Bg[n]);
      s[n] = updated;
      dot += updated * to_float(Cg[n]);
    }
    dot = warp_sum(dot);
    if (lane == 0) y[(b * H + h) * P + p] = from_float<T>(dot + D[h] * xp);
  }
}

}  // namespace

int64_t cache_attention_splits(const CacheAttentionDims& dims) {
  const int64_t rows = dims.batch * dims.queries * dims.q_heads;
  if (rows <= 0) return 1;
  const int64_t by_length = ceil_div(dims.capacity, kCacheAttentionSplit);
  return std::max<int64_t>(1, std::min(by_length, ceil_div(kTargetCtas, rows)));
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
  if (rows == 0 || dims.q_heads == 0) return;
  BRAID_CHECK(dims.v_dim <= 4 * kThreads, "cache_attention: v head dim ", dims.v_dim, " exceeds ", 4 * kThreads);
  BRAID_CHECK(rows <= 65535 && dims.q_heads <= 65535, "cache_attention: ", rows, " query rows x ", dims.q_heads,
              " heads exceed the grid; prefill in smaller chunks");
  const int64_t splits = cache_attention_splits(dims);
  const size_t shared_bytes = size_t(dims.qk_dim + kKeyTile + 32) * sizeof(float);
  float* partial_o = workspace;
  float* partial_lse = splits > 1 ? workspace + rows * dims.q_heads * splits * dims.v_dim : nullptr;
  dispatch_activation("cache_attention", dtype, [&]<typename T>() {
    cache_attention_kernel<T><<<dim3(unsigned(splits), unsigned(dims.q_heads), unsigned(rows)), kThreads,
                                shared_bytes, stream>>>(
        static_cast<const T*>(q), static_cast<const T*>(k_cache), static_cast<const T*>(v_cache), lengths,
        static_cast<T*>(out), partial_o, partial_lse, dims, window, sink, scale, splits);
    CUDA_CHECK_LAST_LAUNCH();
    if (splits > 1) {
      cache_attention_merge_kernel<T><<<unsigned(rows * dims.q_heads), kThreads, 0, stream>>>(
          partial_o, partial_lse, static_cast<T*>(out), splits, dims.v_dim);
      CUDA_CHECK_LAST_LAUNCH();
    }
  });
}

void kv_cache_write(void* cache, const void* values, const int32_t* slots, int64_t batch, int64_t time,
                    int64_t heads, int64_t capacity, int64_t dim, DType dtype, cudaStream_t stream) {
  const int64_t total = batch * time * heads * dim;
  if (total == 0) return;
  dispatch_activation("kv_cache_write", dtype, [&]<typename T>() {
    kv_cache_write_kernel<T><<<unsigned(ceil_div(total, 256)), 256, 0, stream>>>(
        static_cast<T*>(cache), static_cast<const T*>(values), slots, time, heads, capacity, dim, total);
    CUDA_CHECK_LAST_LAUNCH();
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
    rope_at_positions_kernel<T><<<unsigned(ceil_div(total, 256)), 256, 0, stream>>>(
        static_cast<const T*>(x), static_cast<T*>(out), frequencies, positions, time, heads, head_dim, total);
    CUDA_CHECK_LAST_LAUNCH();
  });
}

void conv_state_update(void* state, const void* x, const float* weight, const float* bias, void* out, int64_t batch,
                       int64_t channels, int64_t width, bool apply_silu, DType dtype, cudaStream_t stream) {
  const int64_t total = batch * channels;
  if (total == 0) return;
  dispatch_activation("conv_state_update", dtype, [&]<typename T>() {
    conv_state_update_kernel<T><<<unsigned(ceil_div(total, 256)), 256, 0, stream>>>(
        static_cast<T*>(state), static_cast<const T*>(x), weight, bias, static_cast<T*>(out), channels, width,
        apply_silu, total);
    CUDA_CHECK_LAST_LAUNCH();
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
    ssm_state_update_kernel<T><<<dim3(unsigned(row_blocks), unsigned(dims.heads), unsigned(dims.batch)), kThreads, 0,
                                 stream>>>(state, static_cast<const T*>(x), static_cast<const T*>(dt_raw), dt_bias,
                                           A_log, static_cast<const T*>(B), static_cast<const T*>(C), D,
                                           static_cast<T*>(y), dims);
    CUDA_CHECK_LAST_LAUNCH();
  });
}

}  // namespace braid::kernels::cuda
