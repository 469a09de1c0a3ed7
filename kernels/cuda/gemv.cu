// The few-row product of gemv.h.
//
// A decode step's products read far more weight bytes than anything else, so the kernel is built
// to keep HBM busy from its first cycle to its last:
// - Work: W is cut into groups of 8 rows (the n of one m16n8k16 MMA); each CTA owns a contiguous
//   run of groups, two CTAs per SM. A stage is one group's 8 rows x up to 2048 columns (32 KB):
//   with K <= 2048 those rows are one contiguous piece of W, loaded by a single copy.
// - Stream: warp 0 fills a ring of kStages stages with bulk asynchronous copies (cp.async.bulk,
//   completion counted in bytes on the stage's mbarrier); after the whole CTA has read a stage,
//   warp 0 refills it with the stage kStages ahead.
// - Overlap: the kernel is a programmatic dependent launch and allows its own successor to launch
//   at once; when W is constant it fills the whole ring before waiting for the kernel ahead, so the
//   ramp of one product hides under the tail of the previous kernel.
// - Math: tensor cores with x as the (zero-padded) 16-row A operand and the 8 W rows as B. Which
//   column of a 32-column block feeds which k slot of the MMA is free as long as x and W agree, so
//   each lane reads 8 consecutive columns of its W row and of its x row with one 16-byte load.
//   Warps split the stage's columns and keep their slice of x in registers (with K > 2048 stages
//   run chunk-major, so the slice changes once per chunk); their fp32 partials are added through
//   shared memory in warp order (the result does not depend on scheduling).
#include "kernels/cuda/gemv.h"

#include <cuda_bf16.h>

#include <algorithm>
#include <span>

#include "kernels/cuda/common.cuh"
#include "kernels/cuda/launch.h"
#include "kernels/cuda/mma.cuh"

namespace braid::kernels::cuda {

namespace {

constexpr int kWarps = 8, kThreads = 32 * kWarps;
constexpr int kCtasPerSm = 2;                       // two CTAs of ~108 KB shared memory share an SM
constexpr int kGroupRows = 8;                       // W rows per MMA (n)
constexpr int kChunk = 2048;                        // columns of W per stage
constexpr int kStages = 3;
constexpr int kWarpColumns = kChunk / kWarps;       // 256: eight 32-column blocks per warp and stage
constexpr int kBlocksPerWarp = kWarpColumns / 32;
constexpr int kStageBytes = kGroupRows * kChunk * 2;
constexpr int kGroupFloats = 8 * kGroupRows;        // one group's outputs: (x row, W row)
constexpr int kMaxGroupsPerCta = 32;                // running sums over chunks live in shared memory
constexpr size_t kSharedBytes =
    size_t(kStages) * kStageBytes + (2 * kWarps + kMaxGroupsPerCta) * kGroupFloats * sizeof(float);

struct GemvArgs {
  const __nv_bfloat16* x;
  int64_t ldx;
  int rows, k, chunks;
  int products;
  const __nv_bfloat16* w[kGemvMaxProducts];
  __nv_bfloat16* y[kGemvMaxProducts];
  int64_t ldy[kGemvMaxProducts];
  int n[kGemvMaxProducts];
  int first_group[kGemvMaxProducts + 1];  // the products' groups, numbered one after another
  bool weight_is_constant;
  bool swiglu;  // two products of equal n, groups interleaved (gate group i, then up group i)
};

// Where a group of the launch lies: its product and first W row.
struct GroupPlace {
  int product, row0;
};
__device__ __forceinline__ GroupPlace place_of(const GemvArgs& args, int group) {
  if (args.swiglu) return {group & 1, (group >> 1) * kGroupRows};
  int p = 0;
  while (p + 1 < args.products && group >= args.first_group[p + 1]) ++p;
  return {p, (group - args.first_group[p]) * kGroupRows};
}

// The same formula as the SwiGLU kernels (kernels/cuda/swiglu.cu), on bf16-rounded gate and up.
__device__ __forceinline__ float swiglu_of(float gate, float up) { return gate * (1.0f / (1.0f + expf(-gate))) * up; }

__device__ __forceinline__ void mbarrier_init(uint32_t barrier, uint32_t arrivals) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(barrier), "r"(arrivals));
}
// One arrival that also announces `bytes` of asynchronous copies the phase must wait for.
__device__ __forceinline__ void mbarrier_arrive_expect_bytes(uint32_t barrier, uint32_t bytes) {
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" ::"r"(barrier), "r"(bytes) : "memory");
}
__device__ __forceinline__ void mbarrier_wait(uint32_t barrier, uint32_t parity) {
  uint32_t done = 0;
  while (!done)
    asm volatile(
        "{\n .reg .pred ready;\n mbarrier.try_wait.parity.shared::cta.b64 ready, [%1], %2;\n"
        " selp.u32 %0, 1, 0, ready;\n}\n"
        : "=r"(done)
        : "r"(barrier), "r"(parity)
        : "memory");
}
// `bytes` (a multiple of 16) from global to shared memory, counted on `barrier` when they land.
__device__ __forceinline__ void bulk_copy(uint32_t dst, const void* src, uint32_t bytes, uint32_t barrier) {
  asm volatile("cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];\n" ::"r"(dst),
               "l"(src), "r"(bytes), "r"(barrier)
               : "memory");
}

// kChunked: K spans several chunks (running sums in shared memory, x reloaded per chunk).
template <bool kChunked>
__global__ void __launch_bounds__(kThreads, kCtasPerSm) gemv_kernel(const GemvArgs args) {
  extern __shared__ __align__(128) unsigned char ring[];
  __shared__ __align__(8) uint64_t landed[kStages];
  float* partials = reinterpret_cast<float*>(ring + kStages * kStageBytes);  // [2][warp][kGroupFloats]
  float* totals = partials + 2 * kWarps * kGroupFloats;                      // [group][kGroupFloats]
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, g = lane >> 2, q = lane & 3;
  // CTAs split the groups evenly; SwiGLU pairs stay together.
  const int unit = args.swiglu ? 2 : 1, units = args.first_group[args.products] / unit;
  const int first_group = int(int64_t(blockIdx.x) * units / gridDim.x) * unit;
  const int groups = int(int64_t(blockIdx.x + 1) * units / gridDim.x) * unit - first_group;
  const int chunks = kChunked ? args.chunks : 1;
  const int stages = groups * chunks;  // chunk-major: every group's first chunk, then the next
  // A stage holds its rows `pitch` bytes apart: whole rows when K fits one chunk.
  const int pitch = min(args.k, kChunk) * 2;

  // Warp 0: stage s (column chunk s / groups of group first_group + s % groups) into its slot.
  auto issue = [&](int s) {
    const GroupPlace place = place_of(args, first_group + s % groups);
    const int p = place.product, row0 = place.row0, col0 = (s / groups) * kChunk;
    const int rows = min(kGroupRows, args.n[p] - row0), cols = min(kChunk, args.k - col0);
    const uint32_t barrier = smem_address(&landed[s % kStages]), slot = smem_address(ring + (s % kStages) * kStageBytes);
    const __nv_bfloat16* source = args.w[p] + int64_t(row0) * args.k + col0;
    if constexpr (!kChunked) {  // the rows are contiguous in W
      if (lane == 0) {
        mbarrier_arrive_expect_bytes(barrier, uint32_t(rows * cols * 2));
        bulk_copy(slot, source, uint32_t(rows * cols * 2), barrier);
      }
    } else {
      if (lane == 0) mbarrier_arrive_expect_bytes(barrier, uint32_t(rows * cols * 2));
      __syncwarp();
      if (lane < rows) bulk_copy(slot + lane * pitch, source + int64_t(lane) * args.k, uint32_t(cols * 2), barrier);
    }
  };

  if (threadIdx.x == 0) {
    for (int s = 0; s < kStages; ++s) mbarrier_init(smem_address(&landed[s]), 1);
    asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
  }
  __syncthreads();
  allow_dependent_launch();
  if (!args.weight_is_constant) wait_for_prior_grids();
  if (warp == 0)
    for (int s = 0; s < min(kStages, stages); ++s) issue(s);
  wait_for_prior_grids();  // x is the previous kernel's output

  // This lane's x row (g; rows past args.rows are zero) at the warp's columns of a chunk.
  const bool x_row_live = g < args.rows;
  const __nv_bfloat16* x_row = args.x + (x_row_live ? g : 0) * args.ldx;
  auto load_x = [&](int chunk, uint4 (&xs)[kBlocksPerWarp]) {
#pragma unroll
    for (int b = 0; b < kBlocksPerWarp; ++b) {
      const int column = chunk * kChunk + warp * kWarpColumns + b * 32 + q * 8;
      xs[b] = x_row_live && column < args.k ? __ldg(reinterpret_cast<const uint4*>(x_row + column))
                                            : make_uint4(0, 0, 0, 0);
    }
  };
  uint4 xs[kBlocksPerWarp], next_xs[kBlocksPerWarp];
  load_x(0, xs);
  float gate = 0.f;  // SwiGLU: the gate group's result, kept for the up group that follows
  for (int s = 0; s < stages; ++s) {
    const int chunk = s / groups, local_group = s % groups, cols = min(kChunk, args.k - chunk * kChunk);
    // The next chunk's x is requested a stage ahead of its use.
    const bool chunk_ends = kChunked && local_group == groups - 1;
    if (chunk_ends && chunk + 1 < chunks) load_x(chunk + 1, next_xs);
    mbarrier_wait(smem_address(&landed[s % kStages]), uint32_t(s / kStages) & 1u);
    const unsigned char* w_row = ring + (s % kStages) * kStageBytes + g * pitch;
    // Two accumulators halve the chain of dependent MMAs: (x row g, W rows 2q, 2q+1) in [0], [1];
    // [2], [3] belong to the zero padding rows g + 8.
    float even[4] = {0.f, 0.f, 0.f, 0.f}, odd[4] = {0.f, 0.f, 0.f, 0.f};
#pragma unroll
    for (int b = 0; b < kBlocksPerWarp; ++b) {
      const int block = warp * kWarpColumns + b * 32;
      if (block >= cols) break;
      const uint4 ws = *reinterpret_cast<const uint4*>(w_row + (block + q * 8) * 2);
      // Columns +0,1 and +2,3 of the lane's eight feed k slots 2q and 2q + 8 of one MMA, columns
      // +4..7 the same slots of the other.
      mma_bf16(even, {xs[b].x, 0u, xs[b].y, 0u}, ws.x, ws.y);
      mma_bf16(odd, {xs[b].z, 0u, xs[b].w, 0u}, ws.z, ws.w);
    }
    float* stage_partials = partials + (s & 1) * kWarps * kGroupFloats + warp * kGroupFloats;
    stage_partials[g * 8 + 2 * q] = even[0] + odd[0];
    stage_partials[g * 8 + 2 * q + 1] = even[1] + odd[1];
    __syncthreads();  // every warp is done with the slot and has written its partials
    if (warp == 0 && s + kStages < stages) issue(s + kStages);
    if (threadIdx.x < kGroupFloats) {
      // Thread t owns output (x row t / 8, W row t % 8) of every group: it adds the warps' partials
      // in warp order to the group's running total, and writes the result after the last chunk.
      const float* all_partials = partials + (s & 1) * kWarps * kGroupFloats;
      float total = chunk == 0 ? 0.f : totals[local_group * kGroupFloats + threadIdx.x];
      for (int w = 0; w < kWarps; ++w) total += all_partials[w * kGroupFloats + threadIdx.x];
      if (chunk + 1 < chunks) {
        totals[local_group * kGroupFloats + threadIdx.x] = total;
      } else {
        const GroupPlace place = place_of(args, first_group + local_group);
        const int x_row_index = threadIdx.x >> 3, w_row = place.row0 + (threadIdx.x & 7);
        const __nv_bfloat16 value = __float2bfloat16_rn(total);
        if (args.swiglu && place.product == 0) {
          gate = __bfloat162float(value);
        } else if (x_row_index < args.rows && w_row < args.n[place.product]) {
          const int p = args.swiglu ? 0 : place.product;
          args.y[p][x_row_index * args.ldy[p] + w_row] =
              args.swiglu ? __float2bfloat16_rn(swiglu_of(gate, __bfloat162float(value))) : value;
        }
      }
    }
    if (chunk_ends) {
#pragma unroll
      for (int b = 0; b < kBlocksPerWarp; ++b) xs[b] = next_xs[b];
    }
  }
}

bool aligned16(const void* pointer) { return reinterpret_cast<uintptr_t>(pointer) % 16 == 0; }

}  // namespace

bool gemv_supports(int64_t rows, int64_t K, const void* x, int64_t ldx, std::span<const GemvProduct> products) {
  if (rows < 1 || rows > kGemvMaxRows || K < 32 || K % 32 != 0 || K >= (int64_t(1) << 24) || ldx % 8 != 0 ||
      !aligned16(x) || products.empty() || products.size() > size_t(kGemvMaxProducts))
    return false;
  int64_t groups = 0;
  for (const GemvProduct& product : products) {
    if (product.n < 1 || !aligned16(product.w)) return false;
    groups += ceil_div(product.n, kGroupRows);
  }
  return groups < (int64_t(1) << 27);
}

void gemv(int64_t rows, int64_t K, const void* x, int64_t ldx, std::span<const GemvProduct> products,
          bool weight_is_constant, cudaStream_t stream, GemvEpilogue epilogue) {
  BRAID_CHECK(gemv_supports(rows, K, x, ldx, products), "gemv: unsupported product of ", rows, " rows, K ", K,
              " and ", products.size(), " weights (see gemv_supports)");
  const bool swiglu = epilogue == GemvEpilogue::swiglu;
  BRAID_CHECK(!swiglu || (products.size() == 2 && products[0].n == products[1].n),
              "gemv: the SwiGLU epilogue takes a gate and an up product of equal widths");
  const auto kernel = ceil_div(K, kChunk) > 1 ? gemv_kernel<true> : gemv_kernel<false>;
  CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(kSharedBytes)));
  GemvArgs args{};
  args.x = static_cast<const __nv_bfloat16*>(x);
  args.ldx = ldx;
  args.rows = int(rows);
  args.k = int(K);
  args.chunks = int(ceil_div(K, kChunk));
  args.products = int(products.size());
  for (int p = 0; p < args.products; ++p) {
    args.w[p] = static_cast<const __nv_bfloat16*>(products[p].w);
    args.y[p] = static_cast<__nv_bfloat16*>(products[p].y);
    args.ldy[p] = products[p].ldy;
    args.n[p] = int(products[p].n);
    args.first_group[p + 1] = args.first_group[p] + int(ceil_div(products[p].n, kGroupRows));
  }
  args.weight_is_constant = weight_is_constant;
  args.swiglu = swiglu;
  // Two CTAs an SM when there are groups enough; with several chunks, more (in waves) when the
  // CTAs' running sums would not fit.
  const int64_t groups = args.first_group[args.products];
  int64_t grid = std::min<int64_t>(groups, int64_t(kCtasPerSm) * sm_count());
  if (args.chunks > 1) grid = std::max(grid, ceil_div(groups, kMaxGroupsPerCta));
  launch_dependent(kernel, dim3(unsigned(grid)), dim3(kThreads), kSharedBytes, stream, args);
}

}  // namespace braid::kernels::cuda
