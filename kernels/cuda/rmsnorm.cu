// The segment-norm engine behind rmsnorm, add_rmsnorm, gated_rmsnorm and group_norm (see rmsnorm.h),
// and the rmsnorm entry points.
//
// Layout: a segment is one row (rmsnorm) or one group of a row (group_norm, gated_rmsnorm); segment
// s covers elements [s * size, (s + 1) * size) and its statistics live at index s, which is exactly
// the (rows, groups) layout of mean / rstd.
//
// Parallel strategy: one team of threads per segment. A team is a warp when the segment fits in
// 32 threads x 16 elements (several teams per block), else a block of up to 512 threads; each
// thread keeps its 16 elements (2 bf16 x 8, 4 f32 x 4, or 16 scalars) in registers between the
// reduction and the output pass, so every input is read from memory once. Longer segments
// ("chunked") stream through in chunks of 512 x 16 elements and re-read them per pass.
//
// Backward: a persistent grid of as many teams as fit on the device (a multiple of `groups`, so each
// team only ever sees one group and its parameter columns are fixed). Each team accumulates its
// d_weight (and d_bias) terms in registers over its segments, in segment order, and writes one
// partial row; a second kernel adds the partial rows per channel in a fixed order. No atomics: the
// result is the same on every run on a given device.
#include "kernels/cuda/rmsnorm.h"

#include <algorithm>
#include <climits>
#include <cstring>
#include <initializer_list>
#include <map>
#include <mutex>
#include <numeric>
#include <tuple>

#include "kernels/cuda/common.cuh"
#include "kernels/cuda/launch.h"

namespace braid::kernels::cuda {

namespace {

// Elements each thread holds per cached tensor.
constexpr int kElemsPerThread = 16;
// Warp teams per block (warp mode).
constexpr int kWarpsPerBlock = 8;
// Largest block team; longer segments are chunked.
constexpr int kMaxTeamThreads = 512;
// Resident blocks per SM the persistent backward uses at most: enough rows in flight to cover
// memory latency, few enough that the partial rows stay small.
constexpr int kMaxBackwardBlocksPerSm = 8;
// The partial-row reduction: 32 channels per block, 32 slices of teams per channel.
constexpr int kReduceColumns = 32;
constexpr int kReduceSlices = 32;

enum class TeamMode { warp, block, chunked };

// The same formula as kernels/cpu/activations.h, in fp32.
__device__ __forceinline__ float sigmoid_of(float u) { return 1.0f / (1.0f + expf(-u)); }

// Who works on which segment: `count` teams of `size` threads; this thread is `rank` in team `id`.
template <TeamMode kMode>
struct Team {
  int size, rank;
  int64_t id, count;

  __device__ __forceinline__ Team() {
    if constexpr (kMode == TeamMode::warp) {
      size = 32;
      rank = int(threadIdx.x & 31);
      id = int64_t(blockIdx.x) * (blockDim.x >> 5) + (threadIdx.x >> 5);
      count = int64_t(gridDim.x) * (blockDim.x >> 5);
    } else {
      size = int(blockDim.x);
      rank = int(threadIdx.x);
      id = blockIdx.x;
      count = gridDim.x;
    }
  }

  // Fixed-order sum over the team; every member gets it. Call from all members.
  __device__ __forceinline__ float sum(float value, float* scratch) const {
    if constexpr (kMode == TeamMode::warp) {
      (void)scratch;
      return warp_sum(value);
    } else {
      return block_sum(value, scratch);
    }
  }
};

struct ForwardArgs {
  const void* a;        // x (rms, add_rms, group) or y (gated_rms)
  const void* b;        // residual (add_rms) or z (gated_rms)
  const float* weight;  // (groups * size)
  const float* bias;    // (groups * size), group only
  void* sum;            // add_rms only
  void* out;
  float* mean;          // (segments), group only
  float* rstd;          // (segments)
  int64_t segments, groups, size;
  float eps;
  int64_t b_row_stride;  // elements from one row of b to the next (groups * size when contiguous)
};

struct BackwardArgs {
  const void* a;          // x (rms: the normalized input), y (gated_rms), x (group)
  const void* b;          // z (gated_rms)
  const float* weight;
  const float* mean;      // group only
  const float* rstd;
  const void* d_out;      // d_out, d_direct, d_a, d_b: activation gradients, in T like a and b
  const void* d_direct;   // rms only, may be null: added to d_a
  void* d_a;
  void* d_b;              // gated_rms only
  float* partials;        // (teams, accumulators, size)
  int64_t segments, groups, size;
};

template <SegmentNorm kKind, typename T, int V, TeamMode kMode>
__global__ void __launch_bounds__(kMaxTeamThreads) segment_norm_forward_kernel(const ForwardArgs args) {
  start_after_prior_grids();  // launched with launch_dependent (launch.h)
  constexpr int kVecs = kElemsPerThread / V;
  constexpr bool kCached = kMode != TeamMode::chunked;
  constexpr bool kGroup = kKind == SegmentNorm::group;
  __shared__ float scratch[32];
  const Team<kMode> team;
  const T* a = static_cast<const T*>(args.a);
  const T* b = static_cast<const T*>(args.b);
  T* sum = static_cast<T*>(args.sum);
  T* out = static_cast<T*>(args.out);
  const int64_t size = args.size, vectors = size / V;
  const int64_t chunk = int64_t(team.size) * kVecs;  // vectors per chunk (the whole segment unless chunked)

  for (int64_t s = team.id; s < args.segments; s += team.count) {
    const int64_t first = s * size;
    const int64_t channel0 = (s % args.groups) * size;
    const int64_t b_first = (s / args.groups) * args.b_row_stride + channel0;
    float v[kVecs][V];  // this thread's values to normalize

    // Load v for vector j of the segment: x, round(x + residual) (stored to sum on the first
    // pass), or y * SiLU(z).
    auto load_v = [&](int64_t j, float(&vals)[V], bool store_sum) {
      const int64_t at = first + j * V;
      load_floats<T, V>(a + at, vals);
      if constexpr (kKind == SegmentNorm::add_rms) {
        float other[V];
        load_floats<T, V>(b + b_first + j * V, other);
#pragma unroll
        for (int e = 0; e < V; ++e) vals[e] = to_float(from_float<T>(vals[e] + other[e]));
        if (store_sum) store_floats<T, V>(sum + at, vals);
      } else if constexpr (kKind == SegmentNorm::gated_rms) {
        (void)store_sum;
        float gate[V];
        load_floats<T, V>(b + b_first + j * V, gate);
#pragma unroll
        for (int e = 0; e < V; ++e) vals[e] = vals[e] * (gate[e] * sigmoid_of(gate[e]));
      } else {
        (void)store_sum;
      }
    };

    // Stage 1: sum of squares (rms kinds) or sum (group) over the segment.
    float total = 0.0f;
    for (int64_t c0 = 0; c0 < vectors; c0 += chunk) {
#pragma unroll
      for (int i = 0; i < kVecs; ++i) {
        const int64_t j = c0 + team.rank + int64_t(i) * team.size;
        if (j < vectors) {
          load_v(j, v[i], true);
#pragma unroll
          for (int e = 0; e < V; ++e) total += kGroup ? v[i][e] : v[i][e] * v[i][e];
        }
      }
    }
    total = team.sum(total, scratch);

    float mu = 0.0f, r;
    if constexpr (kGroup) {
      mu = total / float(size);
      // Stage 2 (group): centered sum of squares, which does not cancel like E[x²] - mu².
      float squares = 0.0f;
      for (int64_t c0 = 0; c0 < vectors; c0 += chunk) {
#pragma unroll
        for (int i = 0; i < kVecs; ++i) {
          const int64_t j = c0 + team.rank + int64_t(i) * team.size;
          if (j < vectors) {
            if constexpr (!kCached) load_v(j, v[i], false);
#pragma unroll
            for (int e = 0; e < V; ++e) {
              const float centered = v[i][e] - mu;
              squares += centered * centered;
            }
          }
        }
      }
      squares = team.sum(squares, scratch);
      r = 1.0f / sqrtf(squares / float(size) + args.eps);
    } else {
      r = 1.0f / sqrtf(total / float(size) + args.eps);
    }

    // Stage 3: normalize, scale (and shift), store.
    for (int64_t c0 = 0; c0 < vectors; c0 += chunk) {
#pragma unroll
      for (int i = 0; i < kVecs; ++i) {
        const int64_t j = c0 + team.rank + int64_t(i) * team.size;
        if (j < vectors) {
          if constexpr (!kCached) load_v(j, v[i], false);
          float w[V], y[V];
          load_floats<float, V>(args.weight + channel0 + j * V, w);
          if constexpr (kGroup) {
            float shift[V];
            load_floats<float, V>(args.bias + channel0 + j * V, shift);
#pragma unroll
            for (int e = 0; e < V; ++e) y[e] = (v[i][e] - mu) * r * w[e] + shift[e];
          } else {
#pragma unroll
            for (int e = 0; e < V; ++e) y[e] = v[i][e] * r * w[e];
          }
          store_floats<T, V>(out + first + j * V, y);
        }
      }
    }
    if (team.rank == 0) {
      args.rstd[s] = r;
      if constexpr (kGroup) args.mean[s] = mu;
    }
  }
}

template <SegmentNorm kKind, typename T, int V, TeamMode kMode>
__global__ void __launch_bounds__(kMaxTeamThreads) segment_norm_backward_kernel(const BackwardArgs args) {
  constexpr int kVecs = kElemsPerThread / V;
  constexpr bool kCached = kMode != TeamMode::chunked;
  constexpr bool kGroup = kKind == SegmentNorm::group, kGated = kKind == SegmentNorm::gated_rms;
  constexpr int kAccumulators = kGroup ? 2 : 1;  // d_weight (and d_bias)
  __shared__ float scratch[32];
  const Team<kMode> team;
  const T* a = static_cast<const T*>(args.a);
  const T* b = static_cast<const T*>(args.b);
  const T* d_out = static_cast<const T*>(args.d_out);
  const T* d_direct = static_cast<const T*>(args.d_direct);
  T* d_a = static_cast<T*>(args.d_a);
  T* d_b = static_cast<T*>(args.d_b);
  const int64_t size = args.size, vectors = size / V;
  const int64_t chunk = int64_t(team.size) * kVecs;
  // The grid holds a multiple of `groups` teams, so all of this team's segments are in one group.
  const int64_t channel0 = (team.id % args.groups) * size;
  float* partial = args.partials + team.id * kAccumulators * size;

  // Parameter-gradient accumulators, for columns fixed across the team's segments. (The weights
  // are re-read per segment: they stay in L1, and keeping them in registers too costs occupancy.)
  float acc_w[kVecs][V], acc_b[kVecs][V];
  if constexpr (kCached) {
#pragma unroll
    for (int i = 0; i < kVecs; ++i)
#pragma unroll
      for (int e = 0; e < V; ++e) acc_w[i][e] = acc_b[i][e] = 0.0f;
  } else {
    // Chunked: the team adds straight into its own partial row (each element owned by one thread).
    for (int64_t k = team.rank; k < kAccumulators * size; k += team.size) partial[k] = 0.0f;
    __syncthreads();  // chunked teams are blocks: the zeros land before anyone adds to them
  }
  const float* w_team = args.weight + channel0;

  for (int64_t s = team.id; s < args.segments; s += team.count) {
    const int64_t first = s * size;
    const float r = args.rstd[s];
    const float mu = kGroup ? args.mean[s] : 0.0f;
    float va[kVecs][V], vb[kVecs][V], vd[kVecs][V];  // a, b (gated), d_out
    auto load_inputs = [&](int64_t j, float(&xa)[V], float(&xb)[V], float(&xd)[V]) {
      const int64_t at = first + j * V;
      load_floats<T, V>(a + at, xa);
      if constexpr (kGated) load_floats<T, V>(b + at, xb);
      else (void)xb;
      load_floats<T, V>(d_out + at, xd);
    };

    // Stage 1: the segment's reductions.
    //   rms: sum(d_y * w * x);  gated: sum(v_hat * d_out * w);  group: sum(g), sum(g * x_hat).
    float sum1 = 0.0f, sum2 = 0.0f;
    for (int64_t c0 = 0; c0 < vectors; c0 += chunk) {
#pragma unroll
      for (int i = 0; i < kVecs; ++i) {
        const int64_t j = c0 + team.rank + int64_t(i) * team.size;
        if (j < vectors) {
          load_inputs(j, va[i], vb[i], vd[i]);
          float w[V];
          load_floats<float, V>(w_team + j * V, w);
#pragma unroll
          for (int e = 0; e < V; ++e) {
            if constexpr (kGroup) {
              const float g = vd[i][e] * w[e], x_hat = (va[i][e] - mu) * r;
              sum1 += g;
              sum2 += g * x_hat;
            } else if constexpr (kGated) {
              const float z = vb[i][e];
              const float v_hat = va[i][e] * (z * sigmoid_of(z)) * r;
              sum1 += v_hat * vd[i][e] * w[e];
            } else {
              sum1 += vd[i][e] * w[e] * va[i][e];
            }
          }
        }
      }
    }
    sum1 = team.sum(sum1, scratch);
    if constexpr (kGroup) sum2 = team.sum(sum2, scratch);
    const float mean1 = sum1 / float(size), mean2 = sum2 / float(size);
    const float r3_mean = r * r * r * mean1;  // rms: the coefficient of x in d_x

    // Stage 2: input gradients; parameter-gradient terms into the accumulators.
    for (int64_t c0 = 0; c0 < vectors; c0 += chunk) {
#pragma unroll
      for (int i = 0; i < kVecs; ++i) {
        const int64_t j = c0 + team.rank + int64_t(i) * team.size;
        if (j < vectors) {
          if constexpr (!kCached) load_inputs(j, va[i], vb[i], vd[i]);
          float w[V], da[V], db[V], pw[V], pb[V];
          load_floats<float, V>(w_team + j * V, w);
          const int64_t at = first + j * V;
          if constexpr (kGroup) {
#pragma unroll
            for (int e = 0; e < V; ++e) {
              const float g = vd[i][e] * w[e], x_hat = (va[i][e] - mu) * r;
              da[e] = r * (g - mean1 - x_hat * mean2);
              pw[e] = vd[i][e] * x_hat;
              pb[e] = vd[i][e];
            }
          } else if constexpr (kGated) {
#pragma unroll
            for (int e = 0; e < V; ++e) {
              const float y = va[i][e], z = vb[i][e];
              const float sg = sigmoid_of(z), gate = z * sg;
              const float v_hat = y * gate * r;
              const float dv = r * (vd[i][e] * w[e] - v_hat * mean1);
              da[e] = dv * gate;
              db[e] = dv * y * (sg * (1.0f + z * (1.0f - sg)));
              pw[e] = vd[i][e] * v_hat;
            }
            store_floats<T, V>(d_b + at, db);
          } else {
            float direct[V];
            if (d_direct != nullptr) {
              load_floats<T, V>(d_direct + at, direct);
            } else {
#pragma unroll
              for (int e = 0; e < V; ++e) direct[e] = 0.0f;
            }
#pragma unroll
            for (int e = 0; e < V; ++e) {
              da[e] = r * vd[i][e] * w[e] - r3_mean * va[i][e] + direct[e];
              pw[e] = vd[i][e] * va[i][e] * r;
            }
          }
          store_floats<T, V>(d_a + at, da);
          if constexpr (kCached) {
#pragma unroll
            for (int e = 0; e < V; ++e) {
              acc_w[i][e] += pw[e];
              if constexpr (kGroup) acc_b[i][e] += pb[e];
            }
          } else {
#pragma unroll
            for (int e = 0; e < V; ++e) {
              partial[j * V + e] += pw[e];
              if constexpr (kGroup) partial[size + j * V + e] += pb[e];
            }
          }
          (void)db;
          (void)pb;
        }
      }
    }
  }

  // Every team writes its whole partial row (zeros if it had no segment).
  if constexpr (kCached) {
#pragma unroll
    for (int i = 0; i < kVecs; ++i) {
      const int64_t j = team.rank + int64_t(i) * team.size;
      if (j < vectors) {
        store_floats<float, V>(partial + j * V, acc_w[i]);
        if constexpr (kGroup) store_floats<float, V>(partial + size + j * V, acc_b[i]);
      }
    }
  }
}

// d_weight[c] (and d_bias[c]) = the sum of partial rows t = g, g + groups, ... (g = c / size) in
// that order. Block (32 channels, 32 slices): slice y adds teams g + groups * (y + 32 k), then
// slice sums are added in slice order.
__global__ void reduce_partials_kernel(const float* partials, int64_t teams, int64_t groups,
                                       int64_t size, int accumulators, float* d_weight,
                                       float* d_bias) {
  __shared__ float tile[kReduceSlices][kReduceColumns + 1];
  const int64_t channels = groups * size, columns = accumulators * channels;
  const int64_t column = int64_t(blockIdx.x) * kReduceColumns + threadIdx.x;
  float total = 0.0f;
  if (column < columns) {
    const int64_t which = column / channels, c = column % channels;
    const int64_t g = c / size, k = c % size, stride = accumulators * size;
#pragma unroll 4
    for (int64_t t = g + groups * threadIdx.y; t < teams; t += groups * kReduceSlices)
      total += partials[t * stride + which * size + k];
  }
  tile[threadIdx.y][threadIdx.x] = total;
  __syncthreads();
  if (threadIdx.y == 0 && column < columns) {
    float sum = 0.0f;
    for (int y = 0; y < kReduceSlices; ++y) sum += tile[y][threadIdx.x];
    const int64_t which = column / channels, c = column % channels;
    (which == 0 ? d_weight : d_bias)[c] = sum;
  }
}

// ---- Host side: plans and dispatch ----

using ForwardKernel = void (*)(ForwardArgs);
using BackwardKernel = void (*)(BackwardArgs);

struct Plan {
  int vec = 1;  // elements per vector access
  TeamMode mode = TeamMode::warp;
  int threads = 32 * kWarpsPerBlock;  // per block
  int teams_per_block = kWarpsPerBlock;
};

Plan make_plan(int64_t size, int vec) {
  Plan plan;
  plan.vec = vec;
  const int64_t vectors = size / vec, per_thread = kElemsPerThread / vec;
  if (vectors <= 32 * per_thread) return plan;  // a warp per segment
  const int64_t team = ceil_div(ceil_div(vectors, per_thread), 32) * 32;
  plan.mode = team <= kMaxTeamThreads ? TeamMode::block : TeamMode::chunked;
  plan.threads = int(std::min<int64_t>(team, kMaxTeamThreads));
  plan.teams_per_block = 1;
  return plan;
}

// Elements per 16-byte vector.
int vector_width(DType dtype) { return dtype == DType::bf16 ? 8 : 4; }

bool aligned_16(std::initializer_list<const void*> pointers) {
  for (const void* p : pointers)
    if (p != nullptr && reinterpret_cast<uintptr_t>(p) % 16 != 0) return false;
  return true;
}

// Vector accesses need the width to divide the segment and every pointer 16-byte aligned.
int choose_vec(DType dtype, int64_t size, bool pointers_aligned) {
  const int width = vector_width(dtype);
  return size % width == 0 && pointers_aligned ? width : 1;
}

// Blocks of `kernel` with `threads` threads that fit on one SM at once.
int resident_blocks(const void* kernel, int threads) {
  static std::mutex mutex;
  static std::map<std::tuple<int, const void*, int>, int> cache;
  int device = 0;
  CUDA_CHECK(cudaGetDevice(&device));
  std::lock_guard<std::mutex> lock(mutex);
  const auto key = std::make_tuple(device, kernel, threads);
  auto found = cache.find(key);
  if (found != cache.end()) return found->second;
  int blocks = 0;
  CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&blocks, kernel, threads, 0));
  cache[key] = blocks;
  return blocks;
}

template <SegmentNorm kKind, typename T, int V>
ForwardKernel forward_kernel_of(TeamMode mode) {
  switch (mode) {
    case TeamMode::warp: return segment_norm_forward_kernel<kKind, T, V, TeamMode::warp>;
    case TeamMode::block: return segment_norm_forward_kernel<kKind, T, V, TeamMode::block>;
    case TeamMode::chunked: break;
  }
  return segment_norm_forward_kernel<kKind, T, V, TeamMode::chunked>;
}

template <typename T, int V>
ForwardKernel forward_kernel_of(SegmentNorm kind, TeamMode mode) {
  switch (kind) {
    case SegmentNorm::rms: return forward_kernel_of<SegmentNorm::rms, T, V>(mode);
    case SegmentNorm::add_rms: return forward_kernel_of<SegmentNorm::add_rms, T, V>(mode);
    case SegmentNorm::gated_rms: return forward_kernel_of<SegmentNorm::gated_rms, T, V>(mode);
    case SegmentNorm::group: break;
  }
  return forward_kernel_of<SegmentNorm::group, T, V>(mode);
}

template <SegmentNorm kKind, typename T, int V>
BackwardKernel backward_kernel_of(TeamMode mode) {
  switch (mode) {
    case TeamMode::warp: return segment_norm_backward_kernel<kKind, T, V, TeamMode::warp>;
    case TeamMode::block: return segment_norm_backward_kernel<kKind, T, V, TeamMode::block>;
    case TeamMode::chunked: break;
  }
  return segment_norm_backward_kernel<kKind, T, V, TeamMode::chunked>;
}

// add_rms has no backward kernel of its own: its backward is rms with d_direct.
template <typename T, int V>
BackwardKernel backward_kernel_of(SegmentNorm kind, TeamMode mode) {
  switch (kind) {
    case SegmentNorm::rms:
    case SegmentNorm::add_rms: return backward_kernel_of<SegmentNorm::rms, T, V>(mode);
    case SegmentNorm::gated_rms: return backward_kernel_of<SegmentNorm::gated_rms, T, V>(mode);
    case SegmentNorm::group: break;
  }
  return backward_kernel_of<SegmentNorm::group, T, V>(mode);
}

ForwardKernel pick_forward(SegmentNorm kind, DType dtype, const Plan& plan) {
  ForwardKernel kernel = nullptr;
  dispatch_activation("segment_norm_forward", dtype, [&]<typename T>() {
    constexpr int kVec = int(16 / sizeof(T));
    kernel = plan.vec == 1 ? forward_kernel_of<T, 1>(kind, plan.mode)
                           : forward_kernel_of<T, kVec>(kind, plan.mode);
  });
  return kernel;
}

BackwardKernel pick_backward(SegmentNorm kind, DType dtype, const Plan& plan) {
  BackwardKernel kernel = nullptr;
  dispatch_activation("segment_norm_backward", dtype, [&]<typename T>() {
    constexpr int kVec = int(16 / sizeof(T));
    kernel = plan.vec == 1 ? backward_kernel_of<T, 1>(kind, plan.mode)
                           : backward_kernel_of<T, kVec>(kind, plan.mode);
  });
  return kernel;
}

struct BackwardGrid {
  Plan plan;
  BackwardKernel kernel = nullptr;
  int64_t blocks = 0, teams = 0;
};

// As many blocks as are resident on the device at once (one wave, no tail), at most one team per
// segment, rounded to a multiple of `groups` teams.
BackwardGrid backward_grid(SegmentNorm kind, DType dtype, int64_t rows, int64_t groups,
                           int64_t size, int vec) {
  BackwardGrid grid;
  grid.plan = make_plan(size, vec);
  grid.kernel = pick_backward(kind, dtype, grid.plan);
  const int per_sm = std::clamp(
      resident_blocks(reinterpret_cast<const void*>(grid.kernel), grid.plan.threads), 1,
      kMaxBackwardBlocksPerSm);
  const int64_t resident = int64_t(per_sm) * sm_count();
  const int64_t teams_per_block = grid.plan.teams_per_block;
  int64_t blocks = std::min(ceil_div(rows * groups, teams_per_block), resident);
  const int64_t unit = groups / std::gcd(groups, teams_per_block);  // blocks per `groups` teams
  blocks = blocks >= unit ? blocks / unit * unit : unit;
  grid.blocks = blocks;
  grid.teams = blocks * teams_per_block;
  return grid;
}

void check_sizes(const char* op, int64_t rows, int64_t groups, int64_t size) {
  BRAID_CHECK(rows >= 0 && groups >= 1 && size >= 1, op, ": bad sizes rows=", rows,
              " groups=", groups, " group_size=", size);
  BRAID_CHECK(groups * size <= INT_MAX, op, ": ", groups * size, " channels are too many");
}

}  // namespace

void segment_norm_forward(SegmentNorm kind, const void* a, const void* b, const float* weight,
                          const float* bias, void* sum, void* out, float* mean, float* rstd,
                          int64_t rows, int64_t groups, int64_t group_size, float eps, DType dtype,
                          cudaStream_t stream, int64_t b_row_stride) {
  check_sizes("segment_norm_forward", rows, groups, group_size);
  BRAID_CHECK(b_row_stride >= 0, "segment_norm_forward: negative row stride ", b_row_stride);
  const int64_t segments = rows * groups;
  if (segments == 0) return;
  if (b_row_stride == 0) b_row_stride = groups * group_size;
  // Every row of b must start aligned too: the second row's start stands for all of them.
  const void* b_second_row =
      b == nullptr ? nullptr : static_cast<const char*>(b) + b_row_stride * int64_t(dtype_size(dtype));
  const Plan plan = make_plan(
      group_size, choose_vec(dtype, group_size, aligned_16({a, b, b_second_row, weight, bias, sum, out})));
  const ForwardKernel kernel = pick_forward(kind, dtype, plan);
  const int64_t blocks = std::min<int64_t>(ceil_div(segments, plan.teams_per_block), INT_MAX);
  const ForwardArgs args{a, b, weight, bias, sum, out, mean, rstd,
                         segments, groups, group_size, eps, b_row_stride};
  launch_dependent(kernel, dim3(unsigned(blocks)), dim3(unsigned(plan.threads)), 0, stream, args);
}

size_t segment_norm_workspace_floats(SegmentNorm kind, int64_t rows, int64_t groups,
                                     int64_t group_size, DType dtype) {
  check_sizes("segment_norm_workspace_floats", rows, groups, group_size);
  if (rows == 0) return 0;
  const int64_t accumulators = kind == SegmentNorm::group ? 2 : 1;
  // The vector or the scalar plan may run (it depends on pointer alignment): room for either.
  int64_t teams = backward_grid(kind, dtype, rows, groups, group_size, 1).teams;
  const int width = vector_width(dtype);
  if (group_size % width == 0)
    teams = std::max(teams, backward_grid(kind, dtype, rows, groups, group_size, width).teams);
  return size_t(teams * accumulators * group_size);
}

void segment_norm_backward(SegmentNorm kind, const void* a, const void* b, const float* weight,
                           const float* mean, const float* rstd, const void* d_out,
                           const void* d_direct, void* d_a, void* d_b, float* d_weight,
                           float* d_bias, int64_t rows, int64_t groups, int64_t group_size,
                           DType dtype, float* workspace, cudaStream_t stream) {
  check_sizes("segment_norm_backward", rows, groups, group_size);
  if (kind == SegmentNorm::add_rms) kind = SegmentNorm::rms;
  const int accumulators = kind == SegmentNorm::group ? 2 : 1;
  const int64_t channels = groups * group_size;
  if (rows == 0) {  // no rows: the parameter gradients are zero
    CUDA_CHECK(cudaMemsetAsync(d_weight, 0, size_t(channels) * sizeof(float), stream));
    if (accumulators == 2) CUDA_CHECK(cudaMemsetAsync(d_bias, 0, size_t(channels) * sizeof(float), stream));
    return;
  }
  const bool aligned = aligned_16({a, b, weight, d_out, d_direct, d_a, d_b, workspace});
  const BackwardGrid grid =
      backward_grid(kind, dtype, rows, groups, group_size, choose_vec(dtype, group_size, aligned));
  const BackwardArgs args{a,   b,   weight,    mean,         rstd,   d_out,     d_direct,
                          d_a, d_b, workspace, rows * groups, groups, group_size};
  grid.kernel<<<unsigned(grid.blocks), grid.plan.threads, 0, stream>>>(args);
  CUDA_CHECK_LAST_LAUNCH();
  const dim3 reduce_block(kReduceColumns, kReduceSlices);
  const int64_t reduce_blocks = ceil_div(accumulators * channels, kReduceColumns);
  reduce_partials_kernel<<<unsigned(reduce_blocks), reduce_block, 0, stream>>>(
      workspace, grid.teams, groups, group_size, accumulators, d_weight, d_bias);
  CUDA_CHECK_LAST_LAUNCH();
}

void rmsnorm_forward(const void* x, const float* weight, void* y, float* rstd, int64_t rows,
                     int64_t dim, float eps, DType dtype, cudaStream_t stream) {
  segment_norm_forward(SegmentNorm::rms, x, nullptr, weight, nullptr, nullptr, y, nullptr, rstd,
                       rows, 1, dim, eps, dtype, stream);
}

void add_rmsnorm_forward(const void* x, const void* residual, const float* weight, void* sum,
                         void* y, float* rstd, int64_t rows, int64_t dim, float eps, DType dtype,
                         cudaStream_t stream) {
  segment_norm_forward(SegmentNorm::add_rms, x, residual, weight, nullptr, sum, y, nullptr, rstd,
                       rows, 1, dim, eps, dtype, stream);
}

size_t rmsnorm_workspace_floats(int64_t rows, int64_t dim, DType dtype) {
  return segment_norm_workspace_floats(SegmentNorm::rms, rows, 1, dim, dtype);
}

void rmsnorm_backward(const void* x, const float* weight, const float* rstd, const void* d_y,
                      const void* d_x_direct, void* d_x, float* d_weight, int64_t rows,
                      int64_t dim, DType dtype, float* workspace, cudaStream_t stream) {
  segment_norm_backward(SegmentNorm::rms, x, nullptr, weight, nullptr, rstd, d_y, d_x_direct, d_x,
                        nullptr, d_weight, nullptr, rows, 1, dim, dtype, workspace, stream);
}

}  // namespace braid::kernels::cuda
