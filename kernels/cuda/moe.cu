#include "kernels/cuda/moe.h"

#include <algorithm>
#include <cstdint>

#include "kernels/cuda/common.cuh"

namespace braid::kernels::cuda {

namespace {

constexpr unsigned kFullMask = 0xffffffffu;
// Warp-per-row kernels: 8 warps (rows or tokens) per block.
constexpr int kThreads = 256;
constexpr int kRowsPerBlock = kThreads / 32;
// Counting sort: one slot per thread, 1024 slots per block.
constexpr int kPermuteThreads = 1024;
constexpr int kPermuteWarps = kPermuteThreads / 32;
constexpr int kMaxExperts = int(kMoeMaxExperts);
constexpr int kMaxTopK = int(kMoeMaxTopK);

int64_t row_blocks(int64_t rows) { return ceil_div(rows, kRowsPerBlock); }

// ---------------------------------------------------------------------------------------------
// Router
// ---------------------------------------------------------------------------------------------

// sigmoid(u) = 1 / (1 + e^-u) with the CPU twin's rounding. The CPU computes it in f32 with glibc's
// expf, which is correctly rounded except in rare cases; exp in double rounded once to f32 gives
// the correctly rounded value too, while CUDA's expf may be 2 ulp off. Selections compare these
// scores exactly, so matching them to the bit keeps near ties from flipping between backends.
__device__ __forceinline__ float router_score(float u) {
  const float e = static_cast<float>(exp(-static_cast<double>(u)));
  return __fdiv_rn(1.0f, __fadd_rn(1.0f, e));
}

// The backward's sigmoid: no selection depends on it, so f32 expf (2 ulp) is accurate enough.
__device__ __forceinline__ float sigmoid(float u) { return 1.0f / (1.0f + expf(-u)); }

// The router's order: candidate a (key, expert; expert -1 = none) goes before b when its key is
// larger, or equal with the lower expert index (the CPU's strict > over increasing e). A total
// order on real candidates, so a butterfly reduction gives every lane the same winner.
__device__ __forceinline__ bool ranks_before(float key_a, int expert_a, float key_b, int expert_b) {
  return expert_a >= 0 &&
         (expert_b < 0 || key_a > key_b || (key_a == key_b && expert_a < expert_b));
}

// A token's routing decision, the same in every lane of its warp: the k experts best first and
// their weights (unbiased scores, divided by their sum when normalised). Entries j >= k are unused.
struct Selection {
  int chosen[kMaxTopK];
  float gate[kMaxTopK];
};

// The router's decision for one token, taken by its whole warp. Lane l holds experts l and l + 32.
template <typename T>
__device__ __forceinline__ Selection select_experts(const T* row, const float* bias, int num_experts,
                                                    int k, bool normalize) {
  const int lane = threadIdx.x & 31;
  // Stage "score": unbiased score and biased key of this lane's experts; -1 marks none or taken.
  int expert[2];
  float score[2], key[2];
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    const int e = lane + 32 * h;
    const bool live = e < num_experts;
    expert[h] = live ? e : -1;
    score[h] = live ? router_score(to_float(row[e])) : 0.0f;
    key[h] = live ? __fadd_rn(score[h], bias[e]) : 0.0f;
  }

  // Stage "top-k": k rounds of a warp argmax in the router's order; the winner is retired.
  Selection selection;
#pragma unroll
  for (int j = 0; j < kMaxTopK; ++j) {
    selection.gate[j] = 0.0f;
    selection.chosen[j] = 0;
    if (j >= k) continue;
    int best = expert[0];
    float best_key = key[0], best_score = score[0];
    if (ranks_before(key[1], expert[1], best_key, best)) {
      best = expert[1];
      best_key = key[1];
      best_score = score[1];
    }
#pragma unroll
    for (int offset = 16; offset > 0; offset >>= 1) {
      const int other = __shfl_xor_sync(kFullMask, best, offset);
      const float other_key = __shfl_xor_sync(kFullMask, best_key, offset);
      const float other_score = __shfl_xor_sync(kFullMask, best_score, offset);
      if (ranks_before(other_key, other, best_key, best)) {
        best = other;
        best_key = other_key;
        best_score = other_score;
      }
    }
    selection.chosen[j] = best;
    selection.gate[j] = best_score;
    if (best >= 0 && expert[0] == best) expert[0] = -1;
    if (best >= 0 && expert[1] == best) expert[1] = -1;
  }

  // Stage "normalise" in j order like the CPU (sum from 0, then one division each).
  if (normalize) {
    float sum = 0.0f;
#pragma unroll
    for (int j = 0; j < kMaxTopK; ++j)
      if (j < k) sum = __fadd_rn(sum, selection.gate[j]);
#pragma unroll
    for (int j = 0; j < kMaxTopK; ++j)
      if (j < k) selection.gate[j] = __fdiv_rn(selection.gate[j], sum);
  }
  return selection;
}

// One warp per token; lane 0 writes the k choices.
template <typename T>
__global__ void __launch_bounds__(kThreads)
    route_forward_kernel(const T* logits, const float* bias, int64_t n, int num_experts, int k,
                         bool normalize, int32_t* indices, float* weights) {
  const int lane = threadIdx.x & 31;
  const int64_t t = (int64_t(blockIdx.x) * blockDim.x + threadIdx.x) >> 5;
  if (t >= n) return;  // uniform over the warp
  const Selection selection =
      select_experts(logits + t * num_experts, bias, num_experts, k, normalize);
  if (lane == 0) {
#pragma unroll
    for (int j = 0; j < kMaxTopK; ++j) {
      if (j >= k) continue;
      indices[t * k + j] = selection.chosen[j];
      weights[t * k + j] = selection.gate[j];
    }
  }
}

// One warp per token; lane l writes the gates of experts l and l + 32 (0 unless selected).
template <typename T>
__global__ void __launch_bounds__(kThreads)
    dense_gates_kernel(const T* logits, const float* bias, int64_t n, int num_experts, int k,
                       bool normalize, float* gates) {
  const int lane = threadIdx.x & 31;
  const int64_t t = (int64_t(blockIdx.x) * blockDim.x + threadIdx.x) >> 5;
  if (t >= n) return;  // uniform over the warp
  const Selection selection =
      select_experts(logits + t * num_experts, bias, num_experts, k, normalize);
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    const int e = lane + 32 * h;
    if (e >= num_experts) continue;
    float gate = 0.0f;
#pragma unroll
    for (int j = 0; j < kMaxTopK; ++j)
      if (j < k && selection.chosen[j] == e) gate = selection.gate[j];
    gates[t * num_experts + e] = gate;
  }
}

// One warp per token: lane l writes d_logits at experts l and l + 32 (zero unless selected).
template <typename T>
__global__ void __launch_bounds__(kThreads)
    route_backward_kernel(const T* logits, const int32_t* indices, const float* d_weights,
                          int64_t n, int num_experts, int k, bool normalize, float* d_logits) {
  const int lane = threadIdx.x & 31;
  const int64_t t = (int64_t(blockIdx.x) * blockDim.x + threadIdx.x) >> 5;
  if (t >= n) return;
  const T* row = logits + t * num_experts;
  const int32_t* chosen = indices + t * k;
  const float* d_gate = d_weights + t * k;
  // With w_j = s_j / S: dL/ds_i = (d_w_i - sum_j d_w_j w_j) / S. Every lane computes the two sums
  // (k broadcast reads) in the CPU's order.
  float sum = 0.0f, weighted = 0.0f;
  if (normalize) {
    for (int j = 0; j < k; ++j) sum += sigmoid(to_float(row[chosen[j]]));
    for (int j = 0; j < k; ++j)
      weighted += d_gate[j] * sigmoid(to_float(row[chosen[j]])) / sum;
  }
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    const int e = lane + 32 * h;
    if (e >= num_experts) continue;
    float value = 0.0f;
    for (int j = 0; j < k; ++j) {
      if (chosen[j] != e) continue;
      const float s = sigmoid(to_float(row[e]));
      const float d_score = normalize ? (d_gate[j] - weighted) / sum : d_gate[j];
      value = d_score * s * (1.0f - s);
    }
    d_logits[t * num_experts + e] = value;
  }
}

// ---------------------------------------------------------------------------------------------
// Stable counting sort of the slots by expert
// ---------------------------------------------------------------------------------------------

// Shared by the count and scatter passes. Thread i of the block holds slot blockIdx*1024 + i with
// expert e (-1: none). Returns the slot's rank among the block's slots of expert e with a lower
// thread index (so a lower slot id), and leaves table[w*E + e] = slots of e in warps before w and
// table[warps*E + e] = the block's count of e. Contains __syncthreads: call from all threads.
__device__ int rank_in_block(int e, int num_experts, int32_t* table) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
  for (int i = threadIdx.x; i < (warps + 1) * num_experts; i += blockDim.x) table[i] = 0;
  __syncthreads();
  // Stage "rank within the warp": lanes with the same expert find each other.
  const unsigned peers = __match_any_sync(kFullMask, e);
  const int rank = __popc(peers & ((1u << lane) - 1u));
  if (e >= 0 && rank == 0) table[warp * num_experts + e] = __popc(peers);  // one writer per entry
  __syncthreads();
  // Stage "prefix over warps": one thread per expert, in warp order.
  if (int(threadIdx.x) < num_experts) {
    int32_t running = 0;
    for (int w = 0; w < warps; ++w) {
      const int32_t count = table[w * num_experts + threadIdx.x];
      table[w * num_experts + threadIdx.x] = running;
      running += count;
    }
    table[warps * num_experts + threadIdx.x] = running;
  }
  __syncthreads();
  return e >= 0 ? table[warp * num_experts + e] + rank : -1;
}

// The expert of slot s, or -1 past the end (and for ids outside [0, E), which only a corrupted
// route could hold: they are left out rather than written out of bounds).
__device__ __forceinline__ int slot_expert(const int32_t* indices, int64_t s, int64_t slots,
                                           int num_experts) {
  const int e = s < slots ? indices[s] : -1;
  return e >= 0 && e < num_experts ? e : -1;
}

// Pass 1: counts[b*E + e] = slots of expert e in block b.
__global__ void __launch_bounds__(kPermuteThreads)
    permute_count_kernel(const int32_t* indices, int64_t slots, int num_experts, int32_t* counts) {
  __shared__ int32_t table[(kPermuteWarps + 1) * kMaxExperts];
  const int64_t s = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  rank_in_block(slot_expert(indices, s, slots, num_experts), num_experts, table);
  if (int(threadIdx.x) < num_experts)
    counts[int64_t(blockIdx.x) * num_experts + threadIdx.x] =
        table[(blockDim.x >> 5) * num_experts + threadIdx.x];
}

// Pass 2 (one block, one thread per expert): counts become each block's first row for the expert
// (expert start + slots of the expert in earlier blocks); offsets get the expert starts.
__global__ void permute_scan_kernel(int32_t* counts, int64_t blocks, int num_experts,
                                    int64_t* offsets) {
  __shared__ int64_t totals[kMaxExperts], starts[kMaxExperts];
  const int e = threadIdx.x;
  int64_t running = 0;
  if (e < num_experts) {
    for (int64_t b = 0; b < blocks; ++b) {
      const int32_t count = counts[b * num_experts + e];
      counts[b * num_experts + e] = int32_t(running);
      running += count;
    }
    totals[e] = running;
  }
  __syncthreads();
  if (e == 0) {
    int64_t start = 0;
    offsets[0] = 0;
    for (int i = 0; i < num_experts; ++i) {
      starts[i] = start;
      start += totals[i];
      offsets[i + 1] = start;
    }
  }
  __syncthreads();
  if (e < num_experts)
    for (int64_t b = 0; b < blocks; ++b) counts[b * num_experts + e] += int32_t(starts[e]);
}

// Pass 3: every slot goes to its block's first row for its expert plus its rank in the block.
__global__ void __launch_bounds__(kPermuteThreads)
    permute_scatter_kernel(const int32_t* indices, int64_t slots, int num_experts,
                           const int32_t* bases, int32_t* order) {
  __shared__ int32_t table[(kPermuteWarps + 1) * kMaxExperts];
  const int64_t s = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  const int e = slot_expert(indices, s, slots, num_experts);
  const int rank = rank_in_block(e, num_experts, table);
  if (e >= 0) order[bases[int64_t(blockIdx.x) * num_experts + e] + rank] = int32_t(s);
}

// positions[order[p]] = p: the row of each slot (a permutation, so no write conflicts).
__global__ void invert_order_kernel(const int32_t* order, int64_t slots, int32_t* positions) {
  for (int64_t p = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; p < slots;
       p += int64_t(gridDim.x) * blockDim.x)
    positions[order[p]] = int32_t(p);
}

void invert_order(const int32_t* order, int64_t slots, int32_t* positions, cudaStream_t stream) {
  const int blocks = int(std::min<int64_t>(ceil_div(slots, kThreads), 4096));
  invert_order_kernel<<<blocks, kThreads, 0, stream>>>(order, slots, positions);
  CUDA_CHECK_LAST_LAUNCH();
}

// ---------------------------------------------------------------------------------------------
// Gather and combine: one warp per row
// ---------------------------------------------------------------------------------------------


// xs[p] = x[order[p] / k], copied in units U (16, 8, 4 or 2 bytes) that divide the row.
template <typename U>
__global__ void __launch_bounds__(kThreads)
    gather_rows_kernel(const U* x, const int32_t* order, int64_t rows, int64_t k, int64_t units,
                       U* xs) {
  const int lane = threadIdx.x & 31;
  const int64_t p = (int64_t(blockIdx.x) * blockDim.x + threadIdx.x) >> 5;
  if (p >= rows) return;
  const U* source = x + (int64_t(order[p]) / k) * units;
  U* target = xs + p * units;
  for (int64_t u = lane; u < units; u += 32) target[u] = source[u];
}

// d_x[t] = sum over j of d_xs[positions[t*k + j]], from 0 in j order (the CPU's sum, exactly).
template <int V>
__global__ void __launch_bounds__(kThreads)
    gather_backward_kernel(const float* d_xs, const int32_t* positions, int64_t n, int64_t k,
                           int64_t d, float* d_x) {
  const int lane = threadIdx.x & 31;
  const int64_t t = (int64_t(blockIdx.x) * blockDim.x + threadIdx.x) >> 5;
  if (t >= n) return;
  const int32_t* rows = positions + t * k;
  for (int64_t c = int64_t(lane) * V; c < d; c += 32 * V) {
    float total[V];
#pragma unroll
    for (int i = 0; i < V; ++i) total[i] = 0.0f;
    for (int64_t j = 0; j < k; ++j) {
      float part[V];
      load_floats<float, V>(d_xs + int64_t(rows[j]) * d + c, part);
#pragma unroll
      for (int i = 0; i < V; ++i) total[i] += part[i];
    }
    store_floats<float, V>(d_x + t * d + c, total);
  }
}

// Where a combine finds token t's j-th term: its weight, and its row of ys (-1: no term).
// moe_combine: the token's k slots, at their rows of the route's order.
struct RoutedTerms {
  const float* weights;
  const int32_t* positions;  // slot -> row of the order
  int64_t k;
  __device__ int64_t count() const { return k; }
  __device__ int64_t row(int64_t t, int64_t j, float& weight) const {
    weight = weights[t * k + j];
    return positions[t * k + j];
  }
};

// moe_dense_combine: every expert (rows stacked expert-major); a zero gate is no term, so the
// unselected experts' rows are never read.
struct DenseTerms {
  const float* gates;
  int64_t n, num_experts;
  __device__ int64_t count() const { return num_experts; }
  __device__ int64_t row(int64_t t, int64_t e, float& weight) const {
    weight = gates[t * num_experts + e];
    return weight == 0.0f ? -1 : e * n + t;
  }
};

// out[t] = sum over the token's terms of weight * ys[row], fp32 from 0 in term order.
template <typename T, int V, typename Terms>
__global__ void __launch_bounds__(kThreads)
    combine_forward_kernel(const T* ys, Terms terms, int64_t n, int64_t d, T* out) {
  const int lane = threadIdx.x & 31;
  const int64_t t = (int64_t(blockIdx.x) * blockDim.x + threadIdx.x) >> 5;
  if (t >= n) return;
  for (int64_t c = int64_t(lane) * V; c < d; c += 32 * V) {
    float total[V];
#pragma unroll
    for (int i = 0; i < V; ++i) total[i] = 0.0f;
    for (int64_t j = 0; j < terms.count(); ++j) {
      float weight;
      const int64_t row = terms.row(t, j, weight);
      if (row < 0) continue;  // uniform over the warp (one token per warp)
      float value[V];
      load_floats<T, V>(ys + row * d + c, value);
#pragma unroll
      for (int i = 0; i < V; ++i) total[i] += weight * value[i];
    }
    store_floats<T, V>(out + t * d + c, total);
  }
}

// Row p of the order (slot s): d_ys[p] = weights[s] * d_out[s / k]; d_weights[s] = the warp's dot
// product <d_out[s / k], ys[p]> (each slot is one row: no write conflicts).
template <typename T, int V>
__global__ void __launch_bounds__(kThreads)
    combine_backward_kernel(const T* ys, const float* weights, const int32_t* order,
                            const float* d_out, int64_t slots, int64_t k, int64_t d, float* d_ys,
                            float* d_weights) {
  const int lane = threadIdx.x & 31;
  const int64_t p = (int64_t(blockIdx.x) * blockDim.x + threadIdx.x) >> 5;
  if (p >= slots) return;  // uniform over the warp, so the warp_sum below has every lane
  const int64_t s = order[p];
  const float weight = weights[s];
  const float* upstream = d_out + (s / k) * d;
  const T* value = ys + p * d;
  float* target = d_ys + p * d;
  float dot = 0.0f;
  for (int64_t c = int64_t(lane) * V; c < d; c += 32 * V) {
    float g[V], y[V], scaled[V];
    load_floats<float, V>(upstream + c, g);
    load_floats<T, V>(value + c, y);
#pragma unroll
    for (int i = 0; i < V; ++i) {
      scaled[i] = weight * g[i];
      dot += g[i] * y[i];
    }
    store_floats<float, V>(target + c, scaled);
  }
  dot = warp_sum(dot);
  if (lane == 0) d_weights[s] = dot;
}

// ---------------------------------------------------------------------------------------------
// Bias update
// ---------------------------------------------------------------------------------------------

__global__ void bias_update_kernel(float* bias, const int64_t* load, int64_t num_experts,
                                   double rate) {
  const int64_t e = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (e >= num_experts) return;
  int64_t total = 0;
  for (int64_t i = 0; i < num_experts; ++i) total += load[i];
  const int64_t excess = total - num_experts * load[e];  // E * (mean_load - load_e)
  const int sign = (excess > 0) - (excess < 0);
  bias[e] += float(rate * sign);  // as the CPU: the step in double, rounded to f32, then added
}

bool aligned(const void* pointer, size_t bytes) {
  return reinterpret_cast<uintptr_t>(pointer) % bytes == 0;
}

// The sizes select_experts handles: a warp's two experts per lane, k gates in registers.
void check_router_size(const char* op, int64_t num_experts, int64_t k) {
  BRAID_CHECK(num_experts >= 1 && num_experts <= kMoeMaxExperts && k >= 1 &&
                  k <= std::min(num_experts, kMoeMaxTopK),
              op, ": the CUDA router takes 1 <= E <= ", kMoeMaxExperts, " and 1 <= k <= min(E, ",
              kMoeMaxTopK, "), got E = ", num_experts, ", k = ", k);
}

// One warp per output row; 4-wide accesses where the rows and both base addresses allow.
template <typename Terms>
void launch_combine(const char* op, const void* ys, DType dtype, Terms terms, int64_t n, int64_t d,
                    void* out, cudaStream_t stream) {
  const unsigned blocks = unsigned(row_blocks(n));
  dispatch_activation(op, dtype, [&]<typename T>() {
    const T* y = static_cast<const T*>(ys);
    T* o = static_cast<T*>(out);
    if (d % 4 == 0 && aligned(y, 4 * sizeof(T)) && aligned(o, 4 * sizeof(T)))
      combine_forward_kernel<T, 4><<<blocks, kThreads, 0, stream>>>(y, terms, n, d, o);
    else
      combine_forward_kernel<T, 1><<<blocks, kThreads, 0, stream>>>(y, terms, n, d, o);
    CUDA_CHECK_LAST_LAUNCH();
  });
}

}  // namespace

void moe_route_forward(const void* logits, DType dtype, const float* bias, int64_t n,
                       int64_t num_experts, int64_t k, bool normalize, int32_t* indices,
                       float* weights, cudaStream_t stream) {
  check_router_size("moe_route", num_experts, k);
  if (n == 0) return;
  dispatch_activation("moe_route", dtype, [&]<typename T>() {
    route_forward_kernel<T><<<unsigned(row_blocks(n)), kThreads, 0, stream>>>(
        static_cast<const T*>(logits), bias, n, int(num_experts), int(k), normalize, indices,
        weights);
    CUDA_CHECK_LAST_LAUNCH();
  });
}

void moe_dense_gates(const void* logits, DType dtype, const float* bias, int64_t n,
                     int64_t num_experts, int64_t k, bool normalize, float* gates,
                     cudaStream_t stream) {
  check_router_size("moe_dense_gates", num_experts, k);
  if (n == 0) return;
  dispatch_activation("moe_dense_gates", dtype, [&]<typename T>() {
    dense_gates_kernel<T><<<unsigned(row_blocks(n)), kThreads, 0, stream>>>(
        static_cast<const T*>(logits), bias, n, int(num_experts), int(k), normalize, gates);
    CUDA_CHECK_LAST_LAUNCH();
  });
}

void moe_route_backward(const void* logits, DType dtype, const int32_t* indices,
                        const float* d_weights, int64_t n, int64_t num_experts, int64_t k,
                        bool normalize, float* d_logits, cudaStream_t stream) {
  BRAID_CHECK(num_experts >= 1 && num_experts <= kMoeMaxExperts,
              "moe_route backward: the CUDA router takes at most ", kMoeMaxExperts,
              " experts, got ", num_experts);
  if (n == 0) return;
  dispatch_activation("moe_route", dtype, [&]<typename T>() {
    route_backward_kernel<T><<<unsigned(row_blocks(n)), kThreads, 0, stream>>>(
        static_cast<const T*>(logits), indices, d_weights, n, int(num_experts), int(k), normalize,
        d_logits);
    CUDA_CHECK_LAST_LAUNCH();
  });
}

int64_t moe_permute_workspace_ints(int64_t slots, int64_t num_experts) {
  return ceil_div(slots, kPermuteThreads) * num_experts;
}

void moe_permute(const int32_t* indices, int64_t n, int64_t k, int64_t num_experts, int32_t* order,
                 int64_t* offsets, int32_t* workspace, cudaStream_t stream) {
  BRAID_CHECK(num_experts >= 1 && num_experts <= kMoeMaxExperts, "moe_permute: at most ",
              kMoeMaxExperts, " experts on CUDA, got ", num_experts);
  const int64_t slots = n * k;
  if (slots == 0) {
    CUDA_CHECK(cudaMemsetAsync(offsets, 0, size_t(num_experts + 1) * sizeof(int64_t), stream));
    return;
  }
  const int64_t blocks = ceil_div(slots, kPermuteThreads);
  permute_count_kernel<<<unsigned(blocks), kPermuteThreads, 0, stream>>>(indices, slots,
                                                                         int(num_experts), workspace);
  CUDA_CHECK_LAST_LAUNCH();
  permute_scan_kernel<<<1, kMaxExperts, 0, stream>>>(workspace, blocks, int(num_experts), offsets);
  CUDA_CHECK_LAST_LAUNCH();
  permute_scatter_kernel<<<unsigned(blocks), kPermuteThreads, 0, stream>>>(
      indices, slots, int(num_experts), workspace, order);
  CUDA_CHECK_LAST_LAUNCH();
}

int64_t moe_positions_workspace_ints(int64_t n, int64_t k) { return n * k; }

void moe_gather_forward(const void* x, DType dtype, const int32_t* order, int64_t n, int64_t k,
                        int64_t d, void* xs, cudaStream_t stream) {
  const int64_t rows = n * k;
  if (rows == 0 || d == 0) return;
  // A pure row copy: move the widest unit that divides the row and both base addresses.
  const size_t row_bytes = size_t(d) * dtype_size(dtype);
  auto fits = [&](size_t unit) {
    return row_bytes % unit == 0 && aligned(x, unit) && aligned(xs, unit);
  };
  auto launch = [&]<typename U>() {
    gather_rows_kernel<U><<<unsigned(row_blocks(rows)), kThreads, 0, stream>>>(
        static_cast<const U*>(x), order, rows, k, int64_t(row_bytes / sizeof(U)),
        static_cast<U*>(xs));
    CUDA_CHECK_LAST_LAUNCH();
  };
  if (fits(16)) launch.template operator()<uint4>();
  else if (fits(8)) launch.template operator()<uint2>();
  else if (fits(4)) launch.template operator()<uint32_t>();
  else if (fits(2)) launch.template operator()<uint16_t>();
  else BRAID_FAIL("moe_gather: rows of ", row_bytes, " bytes at unaligned addresses");
}

void moe_gather_backward(const float* d_xs, const int32_t* order, int64_t n, int64_t k, int64_t d,
                         float* d_x, int32_t* positions, cudaStream_t stream) {
  if (n == 0 || d == 0) return;
  invert_order(order, n * k, positions, stream);
  const unsigned blocks = unsigned(row_blocks(n));
  if (d % 4 == 0 && aligned(d_xs, 16) && aligned(d_x, 16))
    gather_backward_kernel<4><<<blocks, kThreads, 0, stream>>>(d_xs, positions, n, k, d, d_x);
  else
    gather_backward_kernel<1><<<blocks, kThreads, 0, stream>>>(d_xs, positions, n, k, d, d_x);
  CUDA_CHECK_LAST_LAUNCH();
}

void moe_combine_forward(const void* ys, DType dtype, const float* weights, const int32_t* order,
                         int64_t n, int64_t k, int64_t d, void* out, int32_t* positions,
                         cudaStream_t stream) {
  if (n == 0 || d == 0) return;
  invert_order(order, n * k, positions, stream);
  launch_combine("moe_combine", ys, dtype, RoutedTerms{weights, positions, k}, n, d, out, stream);
}

void moe_dense_combine(const void* ys, DType dtype, const float* gates, int64_t n,
                       int64_t num_experts, int64_t d, void* out, cudaStream_t stream) {
  if (n == 0 || d == 0) return;
  launch_combine("moe_dense_combine", ys, dtype, DenseTerms{gates, n, num_experts}, n, d, out,
                 stream);
}

void moe_combine_backward(const void* ys, DType dtype, const float* weights, const int32_t* order,
                          const float* d_out, int64_t n, int64_t k, int64_t d, float* d_ys,
                          float* d_weights, cudaStream_t stream) {
  const int64_t slots = n * k;
  if (slots == 0) return;
  // d = 0 still writes d_weights (empty dot products are 0); the loops below simply run no steps.
  const unsigned blocks = unsigned(row_blocks(slots));
  dispatch_activation("moe_combine", dtype, [&]<typename T>() {
    const T* y = static_cast<const T*>(ys);
    if (d % 4 == 0 && aligned(y, 4 * sizeof(T)) && aligned(d_out, 16) && aligned(d_ys, 16))
      combine_backward_kernel<T, 4><<<blocks, kThreads, 0, stream>>>(y, weights, order, d_out,
                                                                     slots, k, d, d_ys, d_weights);
    else
      combine_backward_kernel<T, 1><<<blocks, kThreads, 0, stream>>>(y, weights, order, d_out,
                                                                     slots, k, d, d_ys, d_weights);
    CUDA_CHECK_LAST_LAUNCH();
  });
}

void moe_bias_update(float* bias, const int64_t* load, int64_t num_experts, double rate,
                     cudaStream_t stream) {
  if (num_experts == 0) return;
  constexpr int kBiasThreads = 64;
  bias_update_kernel<<<unsigned(ceil_div(num_experts, kBiasThreads)), kBiasThreads, 0, stream>>>(
      bias, load, num_experts, rate);
  CUDA_CHECK_LAST_LAUNCH();
}

}  // namespace braid::kernels::cuda
