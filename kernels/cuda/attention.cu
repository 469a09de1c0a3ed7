// Flash attention forward and backward (KERNELS.md sections 7 and 8), the device twin of
// kernels/cpu/attention.cpp. See attention.h for the contract.
//
// bf16 path (FlashAttention-2 structure on mma.sync, sm_80+; tuned for H100):
//   forward   one CTA (4 warps) per 128 query rows of one (b, hq); each warp owns 32 rows (two m16
//             tiles). K/V tiles of 64 keys are double-buffered in shared memory with cp.async; the
//             key tiles a query block can see are visited from the diagonal down, skipping every
//             tile that the causal mask or the sliding window hides completely (windowed cost is
//             O(T * window)). S = Q Kᵀ and O += P V run on m16n8k16 bf16 tensor cores with operands
//             from ldmatrix; softmax is online, in the exp2 domain, fp32 statistics in registers;
//             P is converted to bf16 in registers (the S accumulator layout is the A layout).
//   backward  preprocess: D = rowsum(bf16(dO) ⊙ O), LSE·log2 e (padded rows: D = 0, LSE = +inf so
//             P = 0), a bf16 copy of dO, dQ = 0. Main: one CTA (8 warps) per 128 keys of one
//             (b, hk); each warp owns 16 keys. It walks every query head of the GQA group and
//             every 64-row query block that can see its keys, computing Sᵀ = K Qᵀ and dPᵀ = V dOᵀ
//             with keys as rows, so Pᵀ and dSᵀ feed dV += Pᵀ dO and dK += dSᵀ Q straight from
//             registers; dK and dV stay in fp32 registers for the whole walk (GQA needs no extra
//             reduction). dSᵀ goes through shared memory for dQ = dS K, which is added to the f32
//             gradient with atomicAdd (already scaled: no postprocess).
// f32 path: plain SIMT kernels, one warp per query (or key) row, exact fp32 arithmetic, used for
//   --dtype fp32 parity with the CPU; speed does not matter there.
#include "kernels/cuda/attention.h"

#include <cuda_bf16.h>

#include <algorithm>
#include <climits>
#include <cmath>
#include <type_traits>

#include "kernels/cuda/common.cuh"
#include "kernels/cuda/mma.cuh"
#include "runtime/cuda_check.h"
#include "runtime/error.h"

namespace braid::kernels::cuda {

namespace {

using bf16 = __nv_bfloat16;

constexpr float kLog2e = 1.4426950408889634f;
constexpr float kLn2 = 0.6931471805599453f;
constexpr int kStatRows = 64;  // the query-row padding of the backward statistics (= bf16 BM)

// ------------------------------------------------------------------------------------------------
// The mask and the tiles it keeps (all kernels)
// ------------------------------------------------------------------------------------------------

// kernels/cpu/attention.h: key s is visible from query t iff s <= t and (window == 0 or
// t - s < window or s < sink).
// The kernels take the window and sink as set_mask() leaves them on the host (window < T,
// sink <= T), so they fit in int.
__device__ __forceinline__ bool key_visible(int t, int s, int window, int sink) {
  return s <= t && (window == 0 || t - s < window || s < sink);
}

// Whether some (row, key) pair of rows [r0, r1] x keys [c0, c1] may be hidden. A tile is fully
// visible when all its keys are at or before its first row and, with a window, every pair is
// inside the window or every key is a sink key. Keys >= T always need the mask (they are beyond
// every real row, so c1 <= r0 fails for them).
__device__ __forceinline__ bool tile_needs_mask(int r0, int r1, int c0, int c1, int window,
                                                int sink) {
  return !(c1 <= r0 && (window == 0 || r1 - c0 < window || c1 < sink));
}

// The key tiles that query rows [r0, r0 + rows) can see, as a list: first the window tiles from the
// one holding the diagonal down to the one holding key r0 - window + 1 (all tiles down to 0 without
// a window), then the tiles holding sink keys that lie before that. Tiles in between are hidden
// from every row, so windowed attention costs O(window + sink) per row.
struct KeyTiles {
  int last = 0, window_tiles = 0, total = 0;
  __device__ int tile(int i) const { return i < window_tiles ? last - i : i - window_tiles; }
};

__device__ __forceinline__ KeyTiles key_tiles(int r0, int rows, int tile, int T, int window,
                                              int sink) {
  KeyTiles tiles;
  tiles.last = min(r0 + rows - 1, T - 1) / tile;
  int first_window = 0, sink_tiles = 0;
  if (window > 0) {
    first_window = max(0, r0 - window + 1) / tile;
    sink_tiles = min((sink + tile - 1) / tile, first_window);
  }
  tiles.window_tiles = tiles.last - first_window + 1;
  tiles.total = tiles.window_tiles + sink_tiles;
  return tiles;
}

// The last query row that can see some key of [c0, c1] (the first one is c0).
__device__ __forceinline__ int last_query_row(int c0, int c1, int T, int window, int sink) {
  if (window == 0 || c0 < sink) return T - 1;
  return int(min(int64_t(T) - 1, int64_t(c1) + window - 1));
}

// The bf16 kernels run a 1-D grid of (tile, head) work items in a heavy-first order: causal tiles
// differ in work by up to T / tile, so the longest ones start first (no long tail). Heads (with
// their batch row) go in groups of `group` (kForwardHeadGroup, kBackwardHeadGroup), so the CTAs
// running together share the K/V (forward) or Q/dO/dQ (backward) of a few heads in L2.
constexpr int kForwardHeadGroup = 8, kBackwardHeadGroup = 4;
struct WorkItem {
  int rank;  // 0 = the heaviest tile
  int pair;  // b * heads + head
};
__device__ __forceinline__ WorkItem work_item(int index, int tiles, int pairs, int group) {
  const int chunk = index / (group * tiles);
  const int first = chunk * group;
  const int size = min(group, pairs - first);
  const int within = index - chunk * group * tiles;
  return {within / size, first + within % size};
}

// ------------------------------------------------------------------------------------------------
// exp2 in one instruction (bf16 path)
// ------------------------------------------------------------------------------------------------

__device__ __forceinline__ float fast_exp2(float x) {  // exp2(-inf) = 0
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;\n" : "=f"(y) : "f"(x));
  return y;
}

// Starts copying `Rows` rows of `D` bf16 (D % 8 == 0) from `src + r * row_stride` into shared rows
// of `Stride` elements at `dst`; rows >= valid_rows are zero-filled without reading global memory.
template <int Rows, int D, int Stride, int Threads>
__device__ __forceinline__ void load_rows_async(uint32_t dst, const bf16* src, int row_stride,
                                                int valid_rows, int tid) {
  constexpr int kChunks = D / 8, kTotal = Rows * kChunks;
  // Not unrolled: unrolling makes the compiler keep every chunk's address in registers across the
  // main loop, which spills the hd128 kernels.
#pragma unroll 1
  for (int j = 0; j < (kTotal + Threads - 1) / Threads; ++j) {
    const int index = tid + j * Threads;
    if (kTotal % Threads == 0 || index < kTotal) {
      const int r = index / kChunks, c = index % kChunks;
      const bool valid = r < valid_rows;
      const bf16* from = src + ((valid ? r : 0) * row_stride + c * 8);  // < 2^31: check_dims
      cp_async_16(dst + uint32_t(r * Stride + c * 8) * 2, from, valid ? 16 : 0);
    }
  }
}

// Zeroes columns [D, DPad) of `Rows` shared rows: the head-dim padding (72 -> 80) that the MMAs
// read but global memory does not have. Written once; the tile loads never touch these columns.
template <int Rows, int D, int DPad, int Stride, int Threads>
__device__ __forceinline__ void zero_padding(bf16* rows, int tid) {
  if constexpr (DPad > D) {
    static_assert((DPad - D) % 8 == 0, "head-dim padding is whole 16-byte chunks");
    constexpr int kChunks = (DPad - D) / 8;
    for (int index = tid; index < Rows * kChunks; index += Threads) {
      const int r = index / kChunks, c = index % kChunks;
      *reinterpret_cast<uint4*>(rows + r * Stride + D + c * 8) = make_uint4(0, 0, 0, 0);
    }
  }
}

constexpr int round_up_16(int d) { return (d + 15) / 16 * 16; }

// ------------------------------------------------------------------------------------------------
// bf16 forward
// ------------------------------------------------------------------------------------------------

template <int DQK, int DV>
struct ForwardTile {
  static constexpr int kRows = 128, kKeys = 64, kWarps = 4, kThreads = 32 * kWarps;
  static constexpr int kMTiles = kRows / (16 * kWarps);  // m16 tiles per warp (2: 32 rows)
  // Unroll of the S = Q Kᵀ loop over the head dim, for ILP; 1 for the mixed head dims (Dv = 128
  // with a smaller Dqk), where ptxas would otherwise spill more to prefetch fragments (12-16 bytes
  // remain there, see -Xptxas -v). One softmax update per 64-key tile (32-key halves before: hd128
  // 255 -> 298 TFLOP/s, 72/128 216 -> 262 on an H200 at T 8192); unroll 4 at hd128: 298 -> 302.
  static constexpr int kSUnroll = DV == 128 ? (DQK == 128 ? 4 : 1) : 2;
  // Rescale O on every max update (Dv <= 96: 24 multiplies a row half, cheaper than the warp vote
  // that skips it: hd64 232 -> 249 TFLOP/s) or only when a row of the warp got a new max (Dv = 128,
  // where the unconditional form spills).
  static constexpr bool kAlwaysRescale = DV <= 96;
  static constexpr int kDqk = round_up_16(DQK), kDv = round_up_16(DV);  // padded head dims
  // Shared rows carry 8 extra halves: consecutive rows start 16 bytes apart modulo 128, so the
  // eight row addresses of an ldmatrix phase hit distinct banks.
  static constexpr int kQkStride = kDqk + 8, kVStride = kDv + 8;
  static constexpr int kQElems = kRows * kQkStride, kKElems = kKeys * kQkStride,
                       kVElems = kKeys * kVStride;
  static constexpr size_t kSmemBytes = size_t(kQElems + 2 * kKElems + 2 * kVElems) * sizeof(bf16);
};

struct ForwardArgs {
  const bf16* q;
  const bf16* k;
  const bf16* v;
  bf16* out;
  float* lse;
  int B, T, Hq, Hk, group;
  int window, sink;  // set_mask()
  // The scale into the log2 domain (scale * log2 e) rides in the exponent's FMA, exp2(s·f - max),
  // which needs f > 0 (a max of the raw scores is then the max of the scaled ones, and a hidden
  // -inf never meets f = 0). A zero or negative scale is applied to S first and f = 1.
  float exp_factor;
  bool scale_scores;
  float score_scale;
};

template <int DQK, int DV>
__global__ void __launch_bounds__(128, 2) attention_forward_bf16_kernel(const ForwardArgs a) {
  using C = ForwardTile<DQK, DV>;
  extern __shared__ __align__(128) unsigned char smem[];
  bf16* s_q = reinterpret_cast<bf16*>(smem);
  bf16* s_k = s_q + C::kQElems;      // two stages
  bf16* s_v = s_k + 2 * C::kKElems;  // two stages
  const uint32_t s_q_addr = smem_address(s_q), s_k_addr = smem_address(s_k),
                 s_v_addr = smem_address(s_v);

  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int g = lane >> 2, quad = lane & 3;
  const int num_query_tiles = (a.T + C::kRows - 1) / C::kRows;
  const WorkItem item = work_item(blockIdx.x, num_query_tiles, a.B * a.Hq, kForwardHeadGroup);
  // The last query tile sees the most keys: rank 0.
  const int q0 = (num_query_tiles - 1 - item.rank) * C::kRows;
  const int h = item.pair % a.Hq, b = item.pair / a.Hq, hk = h / a.group;
  // Row strides and offsets within one batch row fit in int (check_dims).
  const int q_stride = a.Hq * DQK, k_stride = a.Hk * DQK, v_stride = a.Hk * DV;
  const bf16* q_rows = a.q + (int64_t(b) * a.T + q0) * q_stride + h * DQK;
  const bf16* k_rows = a.k + int64_t(b) * a.T * k_stride + hk * DQK;
  const bf16* v_rows = a.v + int64_t(b) * a.T * v_stride + hk * DV;

  zero_padding<C::kRows, DQK, C::kDqk, C::kQkStride, C::kThreads>(s_q, tid);
  zero_padding<2 * C::kKeys, DQK, C::kDqk, C::kQkStride, C::kThreads>(s_k, tid);
  zero_padding<2 * C::kKeys, DV, C::kDv, C::kVStride, C::kThreads>(s_v, tid);

  const KeyTiles tiles = key_tiles(q0, C::kRows, C::kKeys, a.T, a.window, a.sink);
  auto load_kv = [&](int tile, int stage) {
    const int c0 = tile * C::kKeys;
    load_rows_async<C::kKeys, DQK, C::kQkStride, C::kThreads>(
        s_k_addr + uint32_t(stage * C::kKElems) * 2, k_rows + c0 * k_stride, k_stride, a.T - c0,
        tid);
    load_rows_async<C::kKeys, DV, C::kVStride, C::kThreads>(
        s_v_addr + uint32_t(stage * C::kVElems) * 2, v_rows + c0 * v_stride, v_stride, a.T - c0,
        tid);
  };

  // Stage "load Q and the first K/V tile" (one cp.async group).
  load_rows_async<C::kRows, DQK, C::kQkStride, C::kThreads>(s_q_addr, q_rows, q_stride, a.T - q0,
                                                            tid);
  load_kv(tiles.tile(0), 0);
  cp_async_commit();

  // Per-lane ldmatrix offsets (elements). A operand (Q rows): matrices (rows 0-7 | 8-15) x
  // (cols 0-7 | 8-15) in register order; B operand from K (rows are keys = n): (n 0-7, k 0-7),
  // (n 0-7, k 8-15), (n 8-15, k 0-7), (n 8-15, k 8-15); B operand from V, transposed (rows are
  // keys = k): (k 0-7, n 0-7), (k 8-15, n 0-7), (k 0-7, n 8-15), (k 8-15, n 8-15).
  const int q_frag = (warp * 16 * C::kMTiles + (lane & 7) + ((lane >> 3) & 1) * 8) * C::kQkStride +
                     (lane >> 4) * 8;
  const int k_frag = ((lane & 7) + (lane >> 4) * 8) * C::kQkStride + ((lane >> 3) & 1) * 8;
  const int v_frag = ((lane & 7) + ((lane >> 3) & 1) * 8) * C::kVStride + (lane >> 4) * 8;

  float o[C::kMTiles][C::kDv / 8][4];
  float row_max[C::kMTiles][2], row_sum[C::kMTiles][2];  // log2 domain; rows g and g + 8
#pragma unroll
  for (int mt = 0; mt < C::kMTiles; ++mt) {
#pragma unroll
    for (int dn = 0; dn < C::kDv / 8; ++dn)
#pragma unroll
      for (int e = 0; e < 4; ++e) o[mt][dn][e] = 0.0f;
    row_max[mt][0] = row_max[mt][1] = -INFINITY;
    row_sum[mt][0] = row_sum[mt][1] = 0.0f;
  }
  const int warp_row0 = q0 + warp * 16 * C::kMTiles;

  for (int it = 0; it < tiles.total; ++it) {
    const int stage = it & 1;
    // Stage "prefetch the next K/V tile" into the other buffer (freed by the trailing barrier of
    // the previous iteration), then wait for this one.
    if (it + 1 < tiles.total) load_kv(tiles.tile(it + 1), stage ^ 1);
    cp_async_commit();
    cp_async_wait<1>();
    __syncthreads();
    const int c0 = tiles.tile(it) * C::kKeys;
    const uint32_t k_addr = s_k_addr + uint32_t(stage * C::kKElems) * 2;
    const uint32_t v_addr = s_v_addr + uint32_t(stage * C::kVElems) * 2;

    // Skip a tile hidden from all 32 rows of this warp (past the diagonal, or between the sink and
    // the window): it would leave O, max and sum unchanged. Warp-uniform; the barrier stays shared.
    const int warp_row_last = min(warp_row0 + 16 * C::kMTiles, a.T) - 1;
    const bool hidden_from_warp =
        c0 > warp_row_last ||
        (a.window > 0 && c0 >= a.sink && c0 + C::kKeys - 1 < warp_row0 - a.window + 1);
    if (!hidden_from_warp) {
      // Stage "mask bits": whether each of this lane's (row, key) pairs is visible, one bit per
      // pair, computed before the S accumulators are live. Per row the visible keys are
      // [window_first, min(row, T - 1)] and [0, sink_end) with sink_end = min(sink, window_first)
      // (key_visible), compared as offsets from the lane's first column.
      const bool masked = tile_needs_mask(warp_row0, warp_row0 + 16 * C::kMTiles - 1, c0,
                                          c0 + C::kKeys - 1, a.window, a.sink);
      uint32_t visible[C::kMTiles];
      if (masked) {
        const int base = c0 + quad * 2;
#pragma unroll
        for (int mt = 0; mt < C::kMTiles; ++mt) {
          visible[mt] = 0;
#pragma unroll
          for (int hh = 0; hh < 2; ++hh) {
            const int row = warp_row0 + mt * 16 + g + hh * 8;
            const int window_first = a.window > 0 ? max(0, row - a.window + 1) : 0;
            const int lo = window_first - base, hi = min(row, a.T - 1) - base;
            const int sink_end = (a.window > 0 ? min(a.sink, window_first) : 0) - base;
#pragma unroll
            for (int nt = 0; nt < C::kKeys / 8; ++nt)
#pragma unroll
              for (int j = 0; j < 2; ++j) {
                const int x = nt * 8 + j, bit = (hh * (C::kKeys / 8) + nt) * 2 + j;
                if ((x >= lo && x <= hi) || x < sink_end) visible[mt] |= 1u << bit;
              }
          }
        }
      }

      // Stage "S = Q Kᵀ": 32 rows x kKeys keys per warp, fp32 accumulation.
      float s[C::kMTiles][C::kKeys / 8][4];
#pragma unroll
      for (int mt = 0; mt < C::kMTiles; ++mt)
#pragma unroll
        for (int nt = 0; nt < C::kKeys / 8; ++nt)
#pragma unroll
          for (int e = 0; e < 4; ++e) s[mt][nt][e] = 0.0f;
      const uint32_t k_frags = k_addr + uint32_t(k_frag) * 2;
#pragma unroll(C::kSUnroll)
      for (int kk = 0; kk < C::kDqk / 16; ++kk) {
        uint32_t qa[C::kMTiles][4];
#pragma unroll
        for (int mt = 0; mt < C::kMTiles; ++mt)
          ldmatrix_x4(qa[mt], s_q_addr + uint32_t(q_frag + mt * 16 * C::kQkStride + kk * 16) * 2);
#pragma unroll
        for (int np = 0; np < C::kKeys / 16; ++np) {
          uint32_t kb[4];
          ldmatrix_x4(kb, k_frags + uint32_t(np * 16 * C::kQkStride + kk * 16) * 2);
#pragma unroll
          for (int mt = 0; mt < C::kMTiles; ++mt) {
            mma_bf16(s[mt][2 * np], qa[mt], kb[0], kb[1]);
            mma_bf16(s[mt][2 * np + 1], qa[mt], kb[2], kb[3]);
          }
        }
      }

      // Stage "mask": hidden pairs (causal, window, keys >= T) -> -inf, after scaling S by a
      // non-positive scale (ForwardArgs::exp_factor; warp-uniform).
      if (a.scale_scores) {
#pragma unroll
        for (int mt = 0; mt < C::kMTiles; ++mt)
#pragma unroll
          for (int nt = 0; nt < C::kKeys / 8; ++nt)
#pragma unroll
            for (int e = 0; e < 4; ++e) s[mt][nt][e] *= a.score_scale;
      }
      if (masked) {
#pragma unroll
        for (int mt = 0; mt < C::kMTiles; ++mt)
#pragma unroll
          for (int hh = 0; hh < 2; ++hh)
#pragma unroll
            for (int nt = 0; nt < C::kKeys / 8; ++nt)
#pragma unroll
              for (int j = 0; j < 2; ++j) {
                const int bit = (hh * (C::kKeys / 8) + nt) * 2 + j;
                if (!((visible[mt] >> bit) & 1u)) s[mt][nt][2 * hh + j] = -INFINITY;
              }
      }

      // Stage "online softmax": new row max over the quad, rescale the running sum and O.
#pragma unroll
      for (int mt = 0; mt < C::kMTiles; ++mt)
#pragma unroll
        for (int hh = 0; hh < 2; ++hh) {
          float tile_max = -INFINITY;
#pragma unroll
          for (int nt = 0; nt < C::kKeys / 8; ++nt)
            tile_max = fmaxf(tile_max, fmaxf(s[mt][nt][2 * hh], s[mt][nt][2 * hh + 1]));
          tile_max = fmaxf(tile_max, __shfl_xor_sync(0xffffffffu, tile_max, 1));
          tile_max = fmaxf(tile_max, __shfl_xor_sync(0xffffffffu, tile_max, 2));
          const float new_max = fmaxf(row_max[mt][hh], tile_max * a.exp_factor);
          // KERNELS.md section 7 guard: a row with nothing visible yet keeps max -inf; subtract
          // 0 so that (-inf) - (-inf) never appears.
          const float shift = new_max == -INFINITY ? 0.0f : new_max;
          const float alpha = fast_exp2(row_max[mt][hh] - shift);
          row_max[mt][hh] = new_max;
          float tile_sum = 0.0f;
#pragma unroll
          for (int nt = 0; nt < C::kKeys / 8; ++nt) {
            const float p0 = fast_exp2(fmaf(s[mt][nt][2 * hh], a.exp_factor, -shift));
            const float p1 = fast_exp2(fmaf(s[mt][nt][2 * hh + 1], a.exp_factor, -shift));
            s[mt][nt][2 * hh] = p0;
            s[mt][nt][2 * hh + 1] = p1;
            tile_sum += p0 + p1;
          }
          row_sum[mt][hh] = row_sum[mt][hh] * alpha + tile_sum;  // this lane's columns only
          // After the first tiles the max rarely moves (kAlwaysRescale).
          if (C::kAlwaysRescale || __any_sync(0xffffffffu, alpha != 1.0f)) {
#pragma unroll
            for (int dn = 0; dn < C::kDv / 8; ++dn) {
              o[mt][dn][2 * hh] *= alpha;
              o[mt][dn][2 * hh + 1] *= alpha;
            }
          }
        }

      // Stage "O += P V": P (bf16, from the S accumulators) as the A operand, V via
      // ldmatrix.trans.
      const uint32_t v_frags = v_addr + uint32_t(v_frag) * 2;
#pragma unroll
      for (int kk = 0; kk < C::kKeys / 16; ++kk) {
        uint32_t pa[C::kMTiles][4];
#pragma unroll
        for (int mt = 0; mt < C::kMTiles; ++mt) {
          pa[mt][0] = pack_bf16(s[mt][2 * kk][0], s[mt][2 * kk][1]);
          pa[mt][1] = pack_bf16(s[mt][2 * kk][2], s[mt][2 * kk][3]);
          pa[mt][2] = pack_bf16(s[mt][2 * kk + 1][0], s[mt][2 * kk + 1][1]);
          pa[mt][3] = pack_bf16(s[mt][2 * kk + 1][2], s[mt][2 * kk + 1][3]);
        }
#pragma unroll
        for (int dp = 0; dp < C::kDv / 16; ++dp) {
          uint32_t vb[4];
          ldmatrix_x4_trans(vb, v_frags + uint32_t(kk * 16 * C::kVStride + dp * 16) * 2);
#pragma unroll
          for (int mt = 0; mt < C::kMTiles; ++mt) {
            mma_bf16(o[mt][2 * dp], pa[mt], vb[0], vb[1]);
            mma_bf16(o[mt][2 * dp + 1], pa[mt], vb[2], vb[3]);
          }
        }
      }
    }
    __syncthreads();  // every warp is done with this stage before the next prefetch refills it
  }
  cp_async_wait<0>();

  // Stage "normalize and store": O / l in bf16; LSE = (m + log2 l) ln 2 in fp32.
#pragma unroll
  for (int mt = 0; mt < C::kMTiles; ++mt)
#pragma unroll
    for (int hh = 0; hh < 2; ++hh) {
      float total = row_sum[mt][hh];
      total += __shfl_xor_sync(0xffffffffu, total, 1);
      total += __shfl_xor_sync(0xffffffffu, total, 2);
      const float inverse = total > 0.0f ? 1.0f / total : 0.0f;  // fully hidden rows give 0
      const int row = warp_row0 + mt * 16 + g + hh * 8;
      if (row >= a.T) continue;
      bf16* out_row = a.out + ((int64_t(b) * a.T + row) * a.Hq + h) * DV;
#pragma unroll
      for (int dn = 0; dn < C::kDv / 8; ++dn) {
        if (dn * 8 < DV) {
          *reinterpret_cast<uint32_t*>(out_row + dn * 8 + quad * 2) =
              pack_bf16(o[mt][dn][2 * hh] * inverse, o[mt][dn][2 * hh + 1] * inverse);
        }
      }
      if (quad == 0) {
        a.lse[(int64_t(b) * a.Hq + h) * a.T + row] =
            total > 0.0f ? (row_max[mt][hh] + log2f(total)) * kLn2 : -INFINITY;
      }
    }
}

// ------------------------------------------------------------------------------------------------
// bf16 backward
// ------------------------------------------------------------------------------------------------

template <int DQK, int DV>
struct BackwardTile {
  static constexpr int kKeys = 128, kRows = kStatRows, kWarps = 8, kThreads = 32 * kWarps;
  static constexpr int kDqk = round_up_16(DQK), kDv = round_up_16(DV);
  static constexpr int kQkStride = kDqk + 8, kVStride = kDv + 8, kDsStride = kRows + 8;
  static constexpr int kKElems = kKeys * kQkStride, kVElems = kKeys * kVStride,
                       kQElems = kRows * kQkStride, kDoElems = kRows * kVStride,
                       kDsElems = kKeys * kDsStride;
  static constexpr size_t kBf16Elems =
      size_t(kKElems) + kVElems + 2 * kQElems + 2 * kDoElems + kDsElems;
  // Statistics after the bf16 arrays (16-byte aligned: every array is a multiple of 8 halves):
  // LSE·log2 e [2 stages][kRows], then D [2 stages][kRows].
  static constexpr size_t kSmemBytes = kBf16Elems * sizeof(bf16) + 4 * kRows * sizeof(float);
};

struct BackwardArgs {
  const bf16* q;
  const bf16* k;
  const bf16* v;
  const bf16* d_out;      // the bf16 copy made by the preprocess
  const float* lse_log2;  // (B, Hq, Tpad): LSE·log2 e, +inf on padded rows
  const float* delta;     // (B, Hq, Tpad): rowsum(dO ⊙ O), 0 on padded rows
  float* d_q;             // (B, T, Hq, Dqk), zeroed by the preprocess, accumulated atomically
  float* d_k;
  float* d_v;
  int B, T, Tpad, Hq, Hk, group;
  int window, sink;  // set_mask()
  float scale, scale_log2;
};

template <int DQK, int DV>
__global__ void __launch_bounds__(256, 1) attention_backward_bf16_kernel(const BackwardArgs a) {
  using C = BackwardTile<DQK, DV>;
  extern __shared__ __align__(128) unsigned char smem[];
  bf16* s_k = reinterpret_cast<bf16*>(smem);
  bf16* s_v = s_k + C::kKElems;
  bf16* s_q = s_v + C::kVElems;       // two stages
  bf16* s_do = s_q + 2 * C::kQElems;  // two stages
  bf16* s_ds = s_do + 2 * C::kDoElems;
  float* s_stats = reinterpret_cast<float*>(s_ds + C::kDsElems);
  const uint32_t s_k_addr = smem_address(s_k), s_v_addr = smem_address(s_v),
                 s_q_addr = smem_address(s_q), s_do_addr = smem_address(s_do),
                 s_ds_addr = smem_address(s_ds), s_stats_addr = smem_address(s_stats);

  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int g = lane >> 2, quad = lane & 3;
  const int num_key_tiles = (a.T + C::kKeys - 1) / C::kKeys;
  const WorkItem item = work_item(blockIdx.x, num_key_tiles, a.B * a.Hk, kBackwardHeadGroup);
  const int c0 = item.rank * C::kKeys;  // the first key tile is seen by the most query rows
  const int hk = item.pair % a.Hk, b = item.pair / a.Hk;
  // Row strides and offsets within one batch row fit in int (check_dims).
  const int q_stride = a.Hq * DQK, k_stride = a.Hk * DQK, v_stride = a.Hk * DV,
            o_stride = a.Hq * DV;

  // The walk: for each query head of the group, the query blocks holding rows [c0, last_row].
  const int last_row = last_query_row(c0, c0 + C::kKeys - 1, a.T, a.window, a.sink);
  const int first_block = c0 / C::kRows;
  const int blocks = last_row / C::kRows - first_block + 1;
  const int steps = a.group * blocks;

  zero_padding<C::kKeys, DQK, C::kDqk, C::kQkStride, C::kThreads>(s_k, tid);
  zero_padding<C::kKeys, DV, C::kDv, C::kVStride, C::kThreads>(s_v, tid);
  zero_padding<2 * C::kRows, DQK, C::kDqk, C::kQkStride, C::kThreads>(s_q, tid);
  zero_padding<2 * C::kRows, DV, C::kDv, C::kVStride, C::kThreads>(s_do, tid);

  auto load_step = [&](int step, int stage) {
    const int h = hk * a.group + step / blocks, r0 = (first_block + step % blocks) * C::kRows;
    load_rows_async<C::kRows, DQK, C::kQkStride, C::kThreads>(
        s_q_addr + uint32_t(stage * C::kQElems) * 2,
        a.q + (int64_t(b) * a.T + r0) * q_stride + int64_t(h) * DQK, q_stride, a.T - r0, tid);
    load_rows_async<C::kRows, DV, C::kVStride, C::kThreads>(
        s_do_addr + uint32_t(stage * C::kDoElems) * 2,
        a.d_out + (int64_t(b) * a.T + r0) * o_stride + int64_t(h) * DV, o_stride, a.T - r0, tid);
    if (tid < 2 * C::kRows / 4) {  // 16 chunks of LSE, 16 of D (rows padded to Tpad: in bounds)
      const int which = tid / (C::kRows / 4), chunk = tid % (C::kRows / 4);
      const float* from =
          (which == 0 ? a.lse_log2 : a.delta) + (int64_t(b) * a.Hq + h) * a.Tpad + r0 + chunk * 4;
      cp_async_16(s_stats_addr + uint32_t(which * 2 * C::kRows + stage * C::kRows + chunk * 4) * 4,
                  from, 16);
    }
  };

  // Stage "load K, V and the first two query blocks" (groups 0 and 1).
  load_rows_async<C::kKeys, DQK, C::kQkStride, C::kThreads>(
      s_k_addr, a.k + int64_t(b) * a.T * k_stride + int64_t(c0) * k_stride + int64_t(hk) * DQK,
      k_stride, a.T - c0, tid);
  load_rows_async<C::kKeys, DV, C::kVStride, C::kThreads>(
      s_v_addr, a.v + int64_t(b) * a.T * v_stride + int64_t(c0) * v_stride + int64_t(hk) * DV,
      v_stride, a.T - c0, tid);
  load_step(0, 0);
  cp_async_commit();
  if (steps > 1) load_step(1, 1);
  cp_async_commit();

  // Per-lane ldmatrix offsets (elements), patterns as in the forward. K and V rows of this warp as
  // A operands; Q and dO rows (= n) as B operands of Sᵀ and dPᵀ; Q and dO rows (= k) transposed as
  // B operands of dK and dV; dSᵀ rows (= k) transposed as the A operand of dQ; K rows (= k)
  // transposed as the B operand of dQ.
  const int ka_frag =
      (warp * 16 + (lane & 7) + ((lane >> 3) & 1) * 8) * C::kQkStride + (lane >> 4) * 8;
  const int va_frag =
      (warp * 16 + (lane & 7) + ((lane >> 3) & 1) * 8) * C::kVStride + (lane >> 4) * 8;
  const int qb_frag = ((lane & 7) + (lane >> 4) * 8) * C::kQkStride + ((lane >> 3) & 1) * 8;
  const int ob_frag = ((lane & 7) + (lane >> 4) * 8) * C::kVStride + ((lane >> 3) & 1) * 8;
  const int qt_frag = ((lane & 7) + ((lane >> 3) & 1) * 8) * C::kQkStride + (lane >> 4) * 8;
  const int ot_frag = ((lane & 7) + ((lane >> 3) & 1) * 8) * C::kVStride + (lane >> 4) * 8;
  const int dq_m = warp & 3, dq_n = warp >> 2;  // dQ: 4 row slices of 16 x 2 column halves
  constexpr int kDqTiles = C::kDqk / 16;        // n8 tiles per warp in dQ (half of kDqk)
  const int ds_frag =
      ((lane & 7) + (lane >> 4) * 8) * C::kDsStride + dq_m * 16 + ((lane >> 3) & 1) * 8;
  const int kt_frag =
      ((lane & 7) + ((lane >> 3) & 1) * 8) * C::kQkStride + (lane >> 4) * 8 + dq_n * (C::kDqk / 2);
  const int kt2_frag = ((lane & 7) + ((lane >> 3) & 1) * 8) * C::kQkStride + dq_n * (C::kDqk / 2) +
                       (kDqTiles - 1) * 8;

  float dk[C::kDqk / 8][4], dv[C::kDv / 8][4];
#pragma unroll
  for (int dn = 0; dn < C::kDqk / 8; ++dn)
#pragma unroll
    for (int e = 0; e < 4; ++e) dk[dn][e] = 0.0f;
#pragma unroll
  for (int dn = 0; dn < C::kDv / 8; ++dn)
#pragma unroll
    for (int e = 0; e < 4; ++e) dv[dn][e] = 0.0f;
  const int warp_key0 = c0 + warp * 16;

  for (int step = 0; step < steps; ++step) {
    const int stage = step & 1;
    const int h = hk * a.group + step / blocks, r0 = (first_block + step % blocks) * C::kRows;
    cp_async_wait<1>();  // groups 0..step complete
    __syncthreads();     // this stage is visible; every warp is done reading s_ds (previous dQ)
    const uint32_t q_addr = s_q_addr + uint32_t(stage * C::kQElems) * 2;
    const uint32_t do_addr = s_do_addr + uint32_t(stage * C::kDoElems) * 2;
    const float* lse_log2 = s_stats + stage * C::kRows;
    const float* delta = s_stats + 2 * C::kRows + stage * C::kRows;

    // Stage "Sᵀ = K Qᵀ": this warp's 16 keys x 64 queries.
    float st[C::kRows / 8][4];
#pragma unroll
    for (int nt = 0; nt < C::kRows / 8; ++nt)
#pragma unroll
      for (int e = 0; e < 4; ++e) st[nt][e] = 0.0f;
#pragma unroll 2
    for (int kk = 0; kk < C::kDqk / 16; ++kk) {
      uint32_t ka[4];
      ldmatrix_x4(ka, s_k_addr + uint32_t(ka_frag + kk * 16) * 2);
#pragma unroll
      for (int np = 0; np < C::kRows / 16; ++np) {
        uint32_t qb[4];
        ldmatrix_x4(qb, q_addr + uint32_t(qb_frag + np * 16 * C::kQkStride + kk * 16) * 2);
        mma_bf16(st[2 * np], ka, qb[0], qb[1]);
        mma_bf16(st[2 * np + 1], ka, qb[2], qb[3]);
      }
    }

    // Stage "Pᵀ = exp2(S·scale·log2 e − LSE·log2 e)", hidden pairs -> 0 (padded rows have
    // LSE = +inf and give 0 by themselves).
    const bool masked =
        tile_needs_mask(r0, r0 + C::kRows - 1, warp_key0, warp_key0 + 15, a.window, a.sink);
#pragma unroll
    for (int nt = 0; nt < C::kRows / 8; ++nt) {
      const float2 l2 = *reinterpret_cast<const float2*>(lse_log2 + nt * 8 + quad * 2);
#pragma unroll
      for (int e = 0; e < 4; ++e)
        st[nt][e] = fast_exp2(st[nt][e] * a.scale_log2 - ((e & 1) ? l2.y : l2.x));
    }
    if (masked) {
      // Per key, the visible query rows are [key, key + window) (all rows from key without a
      // window or for a sink key); as offsets x = 8 nt + (e & 1) from this lane's first row
      // r0 + 2 quad, two compares per element against an immediate. Keys >= T see nothing.
      const int base = r0 + quad * 2;
#pragma unroll
      for (int hh = 0; hh < 2; ++hh) {
        const int key = warp_key0 + g + hh * 8;
        const int lo = key < a.T ? key - base : INT_MAX;
        const int hi = (a.window == 0 || key < a.sink) ? INT_MAX : key + a.window - base;
#pragma unroll
        for (int nt = 0; nt < C::kRows / 8; ++nt)
#pragma unroll
          for (int j = 0; j < 2; ++j) {
            const int x = nt * 8 + j;
            if (!(x >= lo && x < hi)) st[nt][2 * hh + j] = 0.0f;
          }
      }
    }

    // Stage "dPᵀ = V dOᵀ".
    float dpt[C::kRows / 8][4];
#pragma unroll
    for (int nt = 0; nt < C::kRows / 8; ++nt)
#pragma unroll
      for (int e = 0; e < 4; ++e) dpt[nt][e] = 0.0f;
#pragma unroll 2
    for (int kk = 0; kk < C::kDv / 16; ++kk) {
      uint32_t va[4];
      ldmatrix_x4(va, s_v_addr + uint32_t(va_frag + kk * 16) * 2);
#pragma unroll
      for (int np = 0; np < C::kRows / 16; ++np) {
        uint32_t ob[4];
        ldmatrix_x4(ob, do_addr + uint32_t(ob_frag + np * 16 * C::kVStride + kk * 16) * 2);
        mma_bf16(dpt[2 * np], va, ob[0], ob[1]);
        mma_bf16(dpt[2 * np + 1], va, ob[2], ob[3]);
      }
    }

    // Stage "dSᵀ = Pᵀ ⊙ (dPᵀ − D)" (in place of dPᵀ).
#pragma unroll
    for (int nt = 0; nt < C::kRows / 8; ++nt) {
      const float2 d2 = *reinterpret_cast<const float2*>(delta + nt * 8 + quad * 2);
#pragma unroll
      for (int e = 0; e < 4; ++e) dpt[nt][e] = st[nt][e] * (dpt[nt][e] - ((e & 1) ? d2.y : d2.x));
    }

    // Stage "dV += Pᵀ dO, dK += dSᵀ Q": Pᵀ and dSᵀ (bf16) are A operands straight from the
    // accumulators (k = query); dSᵀ also goes to shared memory for dQ.
#pragma unroll
    for (int kk = 0; kk < C::kRows / 16; ++kk) {
      uint32_t pa[4], da[4];
      pa[0] = pack_bf16(st[2 * kk][0], st[2 * kk][1]);
      pa[1] = pack_bf16(st[2 * kk][2], st[2 * kk][3]);
      pa[2] = pack_bf16(st[2 * kk + 1][0], st[2 * kk + 1][1]);
      pa[3] = pack_bf16(st[2 * kk + 1][2], st[2 * kk + 1][3]);
      da[0] = pack_bf16(dpt[2 * kk][0], dpt[2 * kk][1]);
      da[1] = pack_bf16(dpt[2 * kk][2], dpt[2 * kk][3]);
      da[2] = pack_bf16(dpt[2 * kk + 1][0], dpt[2 * kk + 1][1]);
      da[3] = pack_bf16(dpt[2 * kk + 1][2], dpt[2 * kk + 1][3]);
#pragma unroll
      for (int dd = 0; dd < C::kDv / 16; ++dd) {
        uint32_t ob[4];
        ldmatrix_x4_trans(ob, do_addr + uint32_t(ot_frag + kk * 16 * C::kVStride + dd * 16) * 2);
        mma_bf16(dv[2 * dd], pa, ob[0], ob[1]);
        mma_bf16(dv[2 * dd + 1], pa, ob[2], ob[3]);
      }
#pragma unroll
      for (int dd = 0; dd < C::kDqk / 16; ++dd) {
        uint32_t qb[4];
        ldmatrix_x4_trans(qb, q_addr + uint32_t(qt_frag + kk * 16 * C::kQkStride + dd * 16) * 2);
        mma_bf16(dk[2 * dd], da, qb[0], qb[1]);
        mma_bf16(dk[2 * dd + 1], da, qb[2], qb[3]);
      }
      // s_ds holds dSᵀ as (key, query): rows g / g + 8 of this warp, queries 16 kk + 2 quad (+8).
      bf16* ds_row = s_ds + (warp * 16 + g) * C::kDsStride + kk * 16 + quad * 2;
      *reinterpret_cast<uint32_t*>(ds_row) = da[0];
      *reinterpret_cast<uint32_t*>(ds_row + 8 * C::kDsStride) = da[1];
      *reinterpret_cast<uint32_t*>(ds_row + 8) = da[2];
      *reinterpret_cast<uint32_t*>(ds_row + 8 * C::kDsStride + 8) = da[3];
    }
    __syncthreads();  // s_ds complete; this stage's Q/dO are no longer read

    // Stage "prefetch the query block two steps ahead" into the buffers just freed.
    if (step + 2 < steps) load_step(step + 2, stage);
    cp_async_commit();

    // Stage "dQ += scale · dS K": warp (dq_m, dq_n) owns 16 query rows x kDqk / 2 dims; k = the
    // CTA's 128 keys; A = dS via ldmatrix.trans of s_ds, B = K via ldmatrix.trans of s_k.
    float dq[kDqTiles][4];
#pragma unroll
    for (int dn = 0; dn < kDqTiles; ++dn)
#pragma unroll
      for (int e = 0; e < 4; ++e) dq[dn][e] = 0.0f;
#pragma unroll 2
    for (int kk = 0; kk < C::kKeys / 16; ++kk) {
      uint32_t da[4];
      ldmatrix_x4_trans(da, s_ds_addr + uint32_t(ds_frag + kk * 16 * C::kDsStride) * 2);
#pragma unroll
      for (int dd = 0; dd < kDqTiles / 2; ++dd) {
        uint32_t kb[4];
        ldmatrix_x4_trans(kb, s_k_addr + uint32_t(kt_frag + kk * 16 * C::kQkStride + dd * 16) * 2);
        mma_bf16(dq[2 * dd], da, kb[0], kb[1]);
        mma_bf16(dq[2 * dd + 1], da, kb[2], kb[3]);
      }
      if constexpr (kDqTiles % 2 == 1) {  // head dim 80 (72 padded): 5 tiles per half
        uint32_t kb[2];
        ldmatrix_x2_trans(kb, s_k_addr + uint32_t(kt2_frag + kk * 16 * C::kQkStride) * 2);
        mma_bf16(dq[kDqTiles - 1], da, kb[0], kb[1]);
      }
    }
#pragma unroll
    for (int hh = 0; hh < 2; ++hh) {
      const int row = r0 + dq_m * 16 + g + hh * 8;
      if (row >= a.T) continue;
      float* dq_row = a.d_q + (int64_t(b) * a.T + row) * q_stride + int64_t(h) * DQK;
#pragma unroll
      for (int dn = 0; dn < kDqTiles; ++dn) {
        const int col = dq_n * (C::kDqk / 2) + dn * 8;
        if (col < DQK) {
          atomicAdd(reinterpret_cast<float2*>(dq_row + col + quad * 2),
                    make_float2(a.scale * dq[dn][2 * hh], a.scale * dq[dn][2 * hh + 1]));
        }
      }
    }
  }
  cp_async_wait<0>();

  // Stage "store dK (scaled) and dV" in fp32, rows < T, real head dims only.
#pragma unroll
  for (int hh = 0; hh < 2; ++hh) {
    const int key = warp_key0 + g + hh * 8;
    if (key >= a.T) continue;
    float* dk_row = a.d_k + (int64_t(b) * a.T + key) * k_stride + int64_t(hk) * DQK;
    float* dv_row = a.d_v + (int64_t(b) * a.T + key) * v_stride + int64_t(hk) * DV;
#pragma unroll
    for (int dn = 0; dn < C::kDqk / 8; ++dn)
      if (dn * 8 < DQK)
        *reinterpret_cast<float2*>(dk_row + dn * 8 + quad * 2) =
            make_float2(a.scale * dk[dn][2 * hh], a.scale * dk[dn][2 * hh + 1]);
#pragma unroll
    for (int dn = 0; dn < C::kDv / 8; ++dn)
      if (dn * 8 < DV)
        *reinterpret_cast<float2*>(dv_row + dn * 8 + quad * 2) =
            make_float2(dv[dn][2 * hh], dv[dn][2 * hh + 1]);
  }
}

// ------------------------------------------------------------------------------------------------
// Backward preprocess (both dtypes)
// ------------------------------------------------------------------------------------------------

// One warp per (b, h, t < Tpad): D = sum_d dO·O (dO rounded to bf16 first on the bf16 path, the
// values the tensor cores will see), LSE·log2 e, padded rows D = 0 and LSE = +inf; on the bf16
// path also the bf16 copy of dO and dQ = 0 (it is then accumulated atomically).
template <typename T>
__global__ void __launch_bounds__(256)
    attention_backward_preprocess_kernel(const T* out, const float* d_out, const float* lse,
                                         float* delta, float* lse_log2, bf16* d_out_bf16,
                                         float* d_q, int64_t rows, int time, int Tpad, int Hq,
                                         int Dqk, int Dv) {
  const int lane = threadIdx.x & 31;
  const int64_t id = int64_t(blockIdx.x) * 8 + (threadIdx.x >> 5);
  if (id >= rows) return;
  const int t = int(id % Tpad);
  const int64_t bh = id / Tpad, b = bh / Hq, h = bh % Hq;
  if (t >= time) {
    if (lane == 0) {
      delta[id] = 0.0f;
      lse_log2[id] = INFINITY;
    }
    return;
  }
  const int64_t row = (b * time + t) * Hq + h;
  float sum = 0.0f;
  for (int d = lane; d < Dv; d += 32) {
    float grad = d_out[row * Dv + d];
    if constexpr (std::is_same_v<T, bf16>) {
      const bf16 rounded = __float2bfloat16_rn(grad);
      d_out_bf16[row * Dv + d] = rounded;
      grad = __bfloat162float(rounded);
    }
    sum += grad * to_float(out[row * Dv + d]);
  }
  sum = warp_sum(sum);
  if (lane == 0) {
    delta[id] = sum;
    lse_log2[id] = lse[bh * time + t] * kLog2e;
  }
  if (d_q != nullptr)
    for (int d = lane; d < Dqk; d += 32) d_q[row * Dqk + d] = 0.0f;
}

// ------------------------------------------------------------------------------------------------
// f32 path: one warp per row, 32-row tiles of the other side in shared memory
// ------------------------------------------------------------------------------------------------

constexpr int kF32Rows = 8, kF32Tile = 32, kF32Threads = 32 * kF32Rows, kF32MaxDim = 128;

struct F32Args {
  const float* q;
  const float* k;
  const float* v;
  const float* out_grad;  // dO (backward)
  const float* lse;       // (B, Hq, T), natural log
  const float* delta;     // (B, Hq, Tpad)
  float* out;
  float* lse_out;
  float* d_q;
  float* d_k;
  float* d_v;
  int T, Tpad, Hq, Hk, group, Dqk, Dv;
  int window, sink;  // set_mask()
  float scale;
};

// Copies rows [r0, r0 + rows) of one head (zeros past T) into shared rows of `stride` floats.
__device__ __forceinline__ void load_rows_f32(float* dst, int stride, const float* src,
                                              int64_t row_stride, int r0, int rows, int dim,
                                              int T) {
  for (int index = threadIdx.x; index < rows * dim; index += blockDim.x) {
    const int r = index / dim, d = index % dim;
    dst[r * stride + d] = r0 + r < T ? src[int64_t(r0 + r) * row_stride + d] : 0.0f;
  }
}

__device__ __forceinline__ float dot_f32(const float* a, const float* b, int n) {
  float sum = 0.0f;
  for (int i = 0; i < n; ++i) sum += a[i] * b[i];
  return sum;
}

// Forward: warp w of the CTA owns query row r0 + w; lane j scores key c0 + j of each tile.
__global__ void __launch_bounds__(kF32Threads) attention_forward_f32_kernel(const F32Args a) {
  extern __shared__ float f32_smem[];
  const int Dqk = a.Dqk, Dv = a.Dv;
  float* s_q = f32_smem;                    // [8][Dqk]
  float* s_k = s_q + kF32Rows * Dqk;        // [32][Dqk + 1]
  float* s_v = s_k + kF32Tile * (Dqk + 1);  // [32][Dv + 1]
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int r0 = blockIdx.x * kF32Rows, h = blockIdx.y, b = blockIdx.z, hk = h / a.group;
  const int row = r0 + warp;
  const bool valid = row < a.T;
  const int64_t q_stride = int64_t(a.Hq) * Dqk, k_stride = int64_t(a.Hk) * Dqk,
                v_stride = int64_t(a.Hk) * Dv;
  load_rows_f32(s_q, Dqk, a.q + int64_t(b) * a.T * q_stride + int64_t(h) * Dqk, q_stride, r0,
                kF32Rows, Dqk, a.T);
  const KeyTiles tiles = key_tiles(r0, kF32Rows, kF32Tile, a.T, a.window, a.sink);
  float running_max = -INFINITY, running_sum = 0.0f, o[kF32MaxDim / 32] = {};
  for (int it = 0; it < tiles.total; ++it) {
    const int c0 = tiles.tile(it) * kF32Tile;
    __syncthreads();
    load_rows_f32(s_k, Dqk + 1, a.k + int64_t(b) * a.T * k_stride + int64_t(hk) * Dqk, k_stride, c0,
                  kF32Tile, Dqk, a.T);
    load_rows_f32(s_v, Dv + 1, a.v + int64_t(b) * a.T * v_stride + int64_t(hk) * Dv, v_stride, c0,
                  kF32Tile, Dv, a.T);
    __syncthreads();
    if (!valid) continue;
    const int key = c0 + lane;
    float score = -INFINITY;
    if (key < a.T && key_visible(row, key, a.window, a.sink))
      score = a.scale * dot_f32(s_q + warp * Dqk, s_k + lane * (Dqk + 1), Dqk);
    const float new_max = fmaxf(running_max, warp_max(score));
    if (new_max == -INFINITY) continue;  // nothing visible yet (warp-uniform)
    const float alpha = expf(running_max - new_max);
    const float p = score == -INFINITY ? 0.0f : expf(score - new_max);
    running_sum = running_sum * alpha + warp_sum(p);
    running_max = new_max;
#pragma unroll
    for (int i = 0; i < kF32MaxDim / 32; ++i) o[i] *= alpha;
    for (int j = 0; j < kF32Tile; ++j) {
      const float pj = __shfl_sync(0xffffffffu, p, j);
#pragma unroll
      for (int i = 0; i < kF32MaxDim / 32; ++i)
        if (lane + 32 * i < Dv) o[i] += pj * s_v[j * (Dv + 1) + lane + 32 * i];
    }
  }
  if (!valid) return;
  float* out_row = a.out + ((int64_t(b) * a.T + row) * a.Hq + h) * Dv;
#pragma unroll
  for (int i = 0; i < kF32MaxDim / 32; ++i)
    if (lane + 32 * i < Dv) out_row[lane + 32 * i] = o[i] / running_sum;
  if (lane == 0) a.lse_out[(int64_t(b) * a.Hq + h) * a.T + row] = running_max + logf(running_sum);
}

// dQ: warp w owns query row r0 + w; dQ = sum over visible keys of scale·dS·k.
__global__ void __launch_bounds__(kF32Threads) attention_backward_dq_f32_kernel(const F32Args a) {
  extern __shared__ float f32_smem[];
  const int Dqk = a.Dqk, Dv = a.Dv;
  float* s_q = f32_smem;                    // [8][Dqk]
  float* s_do = s_q + kF32Rows * Dqk;       // [8][Dv]
  float* s_k = s_do + kF32Rows * Dv;        // [32][Dqk + 1]
  float* s_v = s_k + kF32Tile * (Dqk + 1);  // [32][Dv + 1]
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int r0 = blockIdx.x * kF32Rows, h = blockIdx.y, b = blockIdx.z, hk = h / a.group;
  const int row = r0 + warp;
  const bool valid = row < a.T;
  const int64_t q_stride = int64_t(a.Hq) * Dqk, k_stride = int64_t(a.Hk) * Dqk,
                v_stride = int64_t(a.Hk) * Dv, o_stride = int64_t(a.Hq) * Dv;
  load_rows_f32(s_q, Dqk, a.q + int64_t(b) * a.T * q_stride + int64_t(h) * Dqk, q_stride, r0,
                kF32Rows, Dqk, a.T);
  load_rows_f32(s_do, Dv, a.out_grad + int64_t(b) * a.T * o_stride + int64_t(h) * Dv, o_stride, r0,
                kF32Rows, Dv, a.T);
  const float row_lse = valid ? a.lse[(int64_t(b) * a.Hq + h) * a.T + row] : 0.0f;
  const float row_delta = valid ? a.delta[(int64_t(b) * a.Hq + h) * a.Tpad + row] : 0.0f;
  const KeyTiles tiles = key_tiles(r0, kF32Rows, kF32Tile, a.T, a.window, a.sink);
  float dq[kF32MaxDim / 32] = {};
  for (int it = 0; it < tiles.total; ++it) {
    const int c0 = tiles.tile(it) * kF32Tile;
    __syncthreads();
    load_rows_f32(s_k, Dqk + 1, a.k + int64_t(b) * a.T * k_stride + int64_t(hk) * Dqk, k_stride, c0,
                  kF32Tile, Dqk, a.T);
    load_rows_f32(s_v, Dv + 1, a.v + int64_t(b) * a.T * v_stride + int64_t(hk) * Dv, v_stride, c0,
                  kF32Tile, Dv, a.T);
    __syncthreads();
    if (!valid) continue;
    const int key = c0 + lane;
    float grad = 0.0f;  // scale · dS for key `key`
    if (key < a.T && key_visible(row, key, a.window, a.sink)) {
      const float p =
          expf(a.scale * dot_f32(s_q + warp * Dqk, s_k + lane * (Dqk + 1), Dqk) - row_lse);
      const float dp = dot_f32(s_do + warp * Dv, s_v + lane * (Dv + 1), Dv);
      grad = a.scale * (p * (dp - row_delta));
    }
    for (int j = 0; j < kF32Tile; ++j) {
      const float gj = __shfl_sync(0xffffffffu, grad, j);
#pragma unroll
      for (int i = 0; i < kF32MaxDim / 32; ++i)
        if (lane + 32 * i < Dqk) dq[i] += gj * s_k[j * (Dqk + 1) + lane + 32 * i];
    }
  }
  if (!valid) return;
  float* dq_row = a.d_q + ((int64_t(b) * a.T + row) * a.Hq + h) * Dqk;
#pragma unroll
  for (int i = 0; i < kF32MaxDim / 32; ++i)
    if (lane + 32 * i < Dqk) dq_row[lane + 32 * i] = dq[i];
}

// dK, dV: warp w owns key row c0 + w of kv head hk; sums over the group's query heads and the
// visible query rows (32-row tiles).
__global__ void __launch_bounds__(kF32Threads) attention_backward_dkv_f32_kernel(const F32Args a) {
  extern __shared__ float f32_smem[];
  const int Dqk = a.Dqk, Dv = a.Dv;
  float* s_k = f32_smem;                      // [8][Dqk]
  float* s_v = s_k + kF32Rows * Dqk;          // [8][Dv]
  float* s_q = s_v + kF32Rows * Dv;           // [32][Dqk + 1]
  float* s_do = s_q + kF32Tile * (Dqk + 1);   // [32][Dv + 1]
  float* s_lse = s_do + kF32Tile * (Dv + 1);  // [32]
  float* s_delta = s_lse + kF32Tile;          // [32]
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int c0 = blockIdx.x * kF32Rows, hk = blockIdx.y, b = blockIdx.z;
  const int key = c0 + warp;
  const bool valid = key < a.T;
  const int64_t q_stride = int64_t(a.Hq) * Dqk, k_stride = int64_t(a.Hk) * Dqk,
                v_stride = int64_t(a.Hk) * Dv, o_stride = int64_t(a.Hq) * Dv;
  load_rows_f32(s_k, Dqk, a.k + int64_t(b) * a.T * k_stride + int64_t(hk) * Dqk, k_stride, c0,
                kF32Rows, Dqk, a.T);
  load_rows_f32(s_v, Dv, a.v + int64_t(b) * a.T * v_stride + int64_t(hk) * Dv, v_stride, c0,
                kF32Rows, Dv, a.T);
  const int last_row = last_query_row(c0, c0 + kF32Rows - 1, a.T, a.window, a.sink);
  float dk[kF32MaxDim / 32] = {}, dv[kF32MaxDim / 32] = {};
  for (int h = hk * a.group; h < (hk + 1) * a.group; ++h) {
    for (int tile = c0 / kF32Tile; tile <= last_row / kF32Tile; ++tile) {
      const int t0 = tile * kF32Tile;
      __syncthreads();
      load_rows_f32(s_q, Dqk + 1, a.q + int64_t(b) * a.T * q_stride + int64_t(h) * Dqk, q_stride,
                    t0, kF32Tile, Dqk, a.T);
      load_rows_f32(s_do, Dv + 1, a.out_grad + int64_t(b) * a.T * o_stride + int64_t(h) * Dv,
                    o_stride, t0, kF32Tile, Dv, a.T);
      if (threadIdx.x < kF32Tile) {
        const int t = t0 + threadIdx.x;
        s_lse[threadIdx.x] = t < a.T ? a.lse[(int64_t(b) * a.Hq + h) * a.T + t] : 0.0f;
        s_delta[threadIdx.x] = t < a.T ? a.delta[(int64_t(b) * a.Hq + h) * a.Tpad + t] : 0.0f;
      }
      __syncthreads();
      if (!valid) continue;
      const int t = t0 + lane;
      float p = 0.0f, grad = 0.0f;  // P and scale · dS of query t
      if (t < a.T && key_visible(t, key, a.window, a.sink)) {
        p = expf(a.scale * dot_f32(s_q + lane * (Dqk + 1), s_k + warp * Dqk, Dqk) - s_lse[lane]);
        const float dp = dot_f32(s_do + lane * (Dv + 1), s_v + warp * Dv, Dv);
        grad = a.scale * (p * (dp - s_delta[lane]));
      }
      for (int j = 0; j < kF32Tile; ++j) {
        const float pj = __shfl_sync(0xffffffffu, p, j);
        const float gj = __shfl_sync(0xffffffffu, grad, j);
#pragma unroll
        for (int i = 0; i < kF32MaxDim / 32; ++i) {
          const int d = lane + 32 * i;
          if (d < Dv) dv[i] += pj * s_do[j * (Dv + 1) + d];
          if (d < Dqk) dk[i] += gj * s_q[j * (Dqk + 1) + d];
        }
      }
    }
  }
  if (!valid) return;
  float* dk_row = a.d_k + (int64_t(b) * a.T + key) * k_stride + int64_t(hk) * Dqk;
  float* dv_row = a.d_v + (int64_t(b) * a.T + key) * v_stride + int64_t(hk) * Dv;
#pragma unroll
  for (int i = 0; i < kF32MaxDim / 32; ++i) {
    if (lane + 32 * i < Dqk) dk_row[lane + 32 * i] = dk[i];
    if (lane + 32 * i < Dv) dv_row[lane + 32 * i] = dv[i];
  }
}

// ------------------------------------------------------------------------------------------------
// Host side
// ------------------------------------------------------------------------------------------------

int64_t padded_time(int64_t T) { return ceil_div(T, kStatRows) * kStatRows; }

// The same visibility with int-sized numbers: a window of T or more hides nothing (plain causal,
// where the sink does not matter), and a sink longer than T is a sink of T.
template <typename Args>
void set_mask(Args& a, const AttentionDims& dims, const AttentionMask& mask) {
  const bool windowed = mask.window > 0 && mask.window < dims.time;
  a.window = windowed ? int(mask.window) : 0;
  a.sink = windowed ? int(std::min(mask.sink, dims.time)) : 0;
}

// Runs body.template operator()<DQK, DV>() for the supported bf16 head-dim pairs.
template <typename Body>
void dispatch_head_dims(int64_t qk_dim, int64_t v_dim, Body&& body) {
  if (v_dim == qk_dim) {
    switch (qk_dim) {
      case 64:
        body.template operator()<64, 64>();
        return;
      case 72:
        body.template operator()<72, 72>();
        return;
      case 96:
        body.template operator()<96, 96>();
        return;
      case 128:
        body.template operator()<128, 128>();
        return;
      default:
        break;
    }
  } else if (v_dim == 128) {
    switch (qk_dim) {
      case 64:
        body.template operator()<64, 128>();
        return;
      case 72:
        body.template operator()<72, 128>();
        return;
      case 96:
        body.template operator()<96, 128>();
        return;
      default:
        break;
    }
  }
  BRAID_FAIL(
      "attention: the bf16 CUDA kernels take Q/K head dims 64, 72, 96 or 128 with V head "
      "dim equal to it or 128, got Dqk ",
      qk_dim, ", Dv ", v_dim);
}

void check_dims(const AttentionDims& dims, DType dtype) {
  BRAID_CHECK(attention_supported(dims.qk_dim, dims.v_dim, dtype),
              "attention: the CUDA kernels do not support Dqk ", dims.qk_dim, ", Dv ", dims.v_dim,
              " in ", dtype_name(dtype),
              " (bf16: Dqk 64, 72, 96 or 128 and Dv = Dqk or 128; f32: both <= 128)");
  BRAID_CHECK(dims.kv_heads > 0 && dims.q_heads % dims.kv_heads == 0, "attention: q heads (",
              dims.q_heads, ") must be a multiple of kv heads (", dims.kv_heads, ")");
  // Offsets inside one batch row are int in the kernels.
  const int64_t row_elems = dims.time * dims.q_heads * std::max(dims.qk_dim, dims.v_dim);
  BRAID_CHECK(row_elems < (int64_t(1) << 31) && dims.batch < 65536 && dims.q_heads < 65536 &&
                  ceil_div(dims.time, 64) * dims.q_heads * dims.batch < (int64_t(1) << 31),
              "attention: sizes too large for the CUDA kernels: B ", dims.batch, ", T ", dims.time,
              ", Hq ", dims.q_heads, ", Dqk ", dims.qk_dim, ", Dv ", dims.v_dim);
}

void check_aligned(const void* pointer, const char* what) {
  BRAID_CHECK(reinterpret_cast<uintptr_t>(pointer) % 16 == 0,
              "attention: the bf16 CUDA kernel needs ", what, " 16-byte aligned");
}

F32Args f32_args(const AttentionDims& dims, const AttentionMask& mask, float scale) {
  F32Args a{};
  a.T = int(dims.time);
  a.Tpad = int(padded_time(dims.time));
  a.Hq = int(dims.q_heads);
  a.Hk = int(dims.kv_heads);
  a.group = int(dims.q_heads / dims.kv_heads);
  a.Dqk = int(dims.qk_dim);
  a.Dv = int(dims.v_dim);
  set_mask(a, dims, mask);
  a.scale = scale;
  return a;
}

bool empty_problem(const AttentionDims& dims) {
  return dims.batch == 0 || dims.time == 0 || dims.q_heads == 0;
}

}  // namespace

bool attention_supported(int64_t qk_dim, int64_t v_dim, DType dtype) {
  if (dtype == DType::f32)
    return qk_dim >= 1 && qk_dim <= kF32MaxDim && v_dim >= 1 && v_dim <= kF32MaxDim;
  if (dtype == DType::bf16)
    return (qk_dim == 64 || qk_dim == 72 || qk_dim == 96 || qk_dim == 128) &&
           (v_dim == qk_dim || v_dim == 128);
  return false;
}

void attention_forward(const void* q, const void* k, const void* v, void* out, float* lse,
                       const AttentionDims& dims, const AttentionMask& mask, float scale,
                       DType dtype, cudaStream_t stream) {
  check_dims(dims, dtype);
  if (empty_problem(dims)) return;
  if (dtype == DType::f32) {
    F32Args a = f32_args(dims, mask, scale);
    a.q = static_cast<const float*>(q);
    a.k = static_cast<const float*>(k);
    a.v = static_cast<const float*>(v);
    a.out = static_cast<float*>(out);
    a.lse_out = lse;
    const size_t smem =
        sizeof(float) * (kF32Rows * a.Dqk + kF32Tile * (a.Dqk + 1) + kF32Tile * (a.Dv + 1));
    const dim3 grid(unsigned(ceil_div(dims.time, kF32Rows)), unsigned(dims.q_heads),
                    unsigned(dims.batch));
    attention_forward_f32_kernel<<<grid, kF32Threads, smem, stream>>>(a);
    CUDA_CHECK_LAST_LAUNCH();
    return;
  }
  BRAID_CHECK(dtype == DType::bf16, "attention: CUDA activations must be f32 or bf16, got ",
              dtype_name(dtype));
  check_aligned(q, "q");
  check_aligned(k, "k");
  check_aligned(v, "v");
  ForwardArgs a{};
  a.q = static_cast<const bf16*>(q);
  a.k = static_cast<const bf16*>(k);
  a.v = static_cast<const bf16*>(v);
  a.out = static_cast<bf16*>(out);
  a.lse = lse;
  a.B = int(dims.batch);
  a.T = int(dims.time);
  a.Hq = int(dims.q_heads);
  a.Hk = int(dims.kv_heads);
  a.group = int(dims.q_heads / dims.kv_heads);
  set_mask(a, dims, mask);
  const float scale_log2 = scale * kLog2e;
  a.scale_scores = !(scale_log2 > 0.0f);
  a.score_scale = scale_log2;
  a.exp_factor = a.scale_scores ? 1.0f : scale_log2;
  dispatch_head_dims(dims.qk_dim, dims.v_dim, [&]<int DQK, int DV>() {
    using C = ForwardTile<DQK, DV>;
    auto kernel = attention_forward_bf16_kernel<DQK, DV>;
    CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                    int(C::kSmemBytes)));
    const dim3 grid(unsigned(ceil_div(dims.time, C::kRows) * dims.q_heads * dims.batch));
    kernel<<<grid, C::kThreads, C::kSmemBytes, stream>>>(a);
    CUDA_CHECK_LAST_LAUNCH();
  });
}

size_t attention_backward_workspace_floats(const AttentionDims& dims, DType dtype) {
  const size_t stats = 2 * size_t(dims.batch * dims.q_heads * padded_time(dims.time));
  if (dtype != DType::bf16) return stats;
  const size_t d_out_halves = size_t(dims.batch * dims.time * dims.q_heads * dims.v_dim);
  return stats + (d_out_halves + 7) / 8 * 4;  // whole 16-byte chunks
}

void attention_backward(const void* q, const void* k, const void* v, const void* out,
                        const float* lse, const float* d_out, float* d_q, float* d_k, float* d_v,
                        float* workspace, const AttentionDims& dims, const AttentionMask& mask,
                        float scale, DType dtype, cudaStream_t stream) {
  check_dims(dims, dtype);
  if (empty_problem(dims)) return;
  BRAID_CHECK(dtype == DType::f32 || dtype == DType::bf16,
              "attention: CUDA activations must be f32 or bf16, got ", dtype_name(dtype));
  const int64_t Tpad = padded_time(dims.time);
  const int64_t stat_rows = dims.batch * dims.q_heads * Tpad;
  float* delta = workspace;
  float* lse_log2 = workspace + stat_rows;
  bf16* d_out_bf16 =
      dtype == DType::bf16 ? reinterpret_cast<bf16*>(workspace + 2 * stat_rows) : nullptr;

  // Stage "preprocess": D, LSE·log2 e, (bf16) dO copy and dQ = 0.
  dispatch_activation("attention", dtype, [&]<typename T>() {
    const bool atomic_dq = std::is_same_v<T, bf16>;
    attention_backward_preprocess_kernel<T><<<unsigned(ceil_div(stat_rows, 8)), 256, 0, stream>>>(
        static_cast<const T*>(out), d_out, lse, delta, lse_log2, d_out_bf16,
        atomic_dq ? d_q : nullptr, stat_rows, int(dims.time), int(Tpad), int(dims.q_heads),
        int(dims.qk_dim), int(dims.v_dim));
    CUDA_CHECK_LAST_LAUNCH();
  });

  if (dtype == DType::f32) {
    F32Args a = f32_args(dims, mask, scale);
    a.q = static_cast<const float*>(q);
    a.k = static_cast<const float*>(k);
    a.v = static_cast<const float*>(v);
    a.out_grad = d_out;
    a.lse = lse;
    a.delta = delta;
    a.d_q = d_q;
    a.d_k = d_k;
    a.d_v = d_v;
    const size_t smem = sizeof(float) * (kF32Rows * (a.Dqk + a.Dv) + kF32Tile * (a.Dqk + 1) +
                                         kF32Tile * (a.Dv + 1) + 2 * kF32Tile);
    const unsigned row_blocks = unsigned(ceil_div(dims.time, kF32Rows));
    attention_backward_dq_f32_kernel<<<dim3(row_blocks, unsigned(dims.q_heads),
                                            unsigned(dims.batch)),
                                       kF32Threads, smem, stream>>>(a);
    CUDA_CHECK_LAST_LAUNCH();
    attention_backward_dkv_f32_kernel<<<dim3(row_blocks, unsigned(dims.kv_heads),
                                             unsigned(dims.batch)),
                                        kF32Threads, smem, stream>>>(a);
    CUDA_CHECK_LAST_LAUNCH();
    return;
  }

  check_aligned(q, "q");
  check_aligned(k, "k");
  check_aligned(v, "v");
  BackwardArgs a{};
  a.q = static_cast<const bf16*>(q);
  a.k = static_cast<const bf16*>(k);
  a.v = static_cast<const bf16*>(v);
  a.d_out = d_out_bf16;
  a.lse_log2 = lse_log2;
  a.delta = delta;
  a.d_q = d_q;
  a.d_k = d_k;
  a.d_v = d_v;
  a.B = int(dims.batch);
  a.T = int(dims.time);
  a.Tpad = int(Tpad);
  a.Hq = int(dims.q_heads);
  a.Hk = int(dims.kv_heads);
  a.group = int(dims.q_heads / dims.kv_heads);
  set_mask(a, dims, mask);
  a.scale = scale;
  a.scale_log2 = scale * kLog2e;
  dispatch_head_dims(dims.qk_dim, dims.v_dim, [&]<int DQK, int DV>() {
    using C = BackwardTile<DQK, DV>;
    auto kernel = attention_backward_bf16_kernel<DQK, DV>;
    CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                    int(C::kSmemBytes)));
    const dim3 grid(unsigned(ceil_div(dims.time, C::kKeys) * dims.kv_heads * dims.batch));
    kernel<<<grid, C::kThreads, C::kSmemBytes, stream>>>(a);
    CUDA_CHECK_LAST_LAUNCH();
  });
}

}  // namespace braid::kernels::cuda
