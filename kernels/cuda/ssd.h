// Mamba-2 SSD scan on CUDA, forward and backward, with the contract of kernels/cpu/ssd.h (MODEL.md
// section 3, KERNELS.md sections 2-4). x (Bt, T, H, P), dt_raw (Bt, T, H), B, C (Bt, T, G, N) in
// `dtype` (f32 or bf16); dt_bias, A_log, D (H), states (Bt, H, P, N) and all gradients f32; dy f32
// or in `dtype`.
// Strategy: chunk cumsums, chunk states, a state-passing sweep, then one 4-warp CTA per (chunk,
// 64-row tile) walking the paired tiles FlashAttention-style with C·B recomputed in registers
// (mma.sync m16n8k16 bf16, fp32 accumulation; the f32 path runs the same fragments on SIMT FMAs).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "runtime/dtype.h"

namespace braid::kernels::cuda {

struct SsdProblem {
  int64_t batch = 0, seq = 0, heads = 0, head_dim = 0, groups = 0, state = 0;  // Bt, T, H, P, G, N
  int64_t chunk = 64;  // Q: a multiple of 16 in [16, 256]; the last chunk is short when Q ∤ T
  double dt_min = 0;   // delta is clamped to [dt_min, dt_max]
  double dt_max = __builtin_huge_val();  // +inf: no upper clamp
};

struct SsdInputs {
  const void* x;               // (Bt, T, H, P), dtype
  const void* dt_raw;          // (Bt, T, H), dtype
  const float* dt_bias;        // (H)
  const float* A_log;          // (H)
  const void* B;               // (Bt, T, G, N), dtype
  const void* C;               // (Bt, T, G, N), dtype
  const float* D;              // (H)
  const float* initial_state;  // (Bt, H, P, N) or nullptr (zeros)
};

// Every pointer is written in full (no accumulation); initial_state may be nullptr (not wanted).
struct SsdGrads {
  float* x;
  float* dt_raw;
  float* dt_bias;
  float* A_log;
  float* B;
  float* C;
  float* D;
  float* initial_state;
};

// Raises braid::Error unless the CUDA kernels take this problem: chunk a multiple of 16 in
// [16, 256], head_dim and state multiples of 16 in [16, 256], groups dividing heads, batch·heads
// and the number of chunks at most 65535. (The f32 path also needs its tiles to fit in shared
// memory: up to P = N = 192 for the backward; the launch names the kernel otherwise.)
void ssd_check_problem(const SsdProblem& problem);

// Scratch the caller allocates (f32, on the device); 16-byte aligned. The forward's ends holding
// delta, the chunk cumsums and the chunk input states (Bt·H·(3T + ceil(T/Q)·P·N) floats, about 70
// MB for a 1b Mamba layer at T 8192), which the backward reads: keep it from the forward to the
// backward of the same inputs. The backward's is scratch for that one call.
size_t ssd_forward_workspace_floats(const SsdProblem& problem);
size_t ssd_backward_workspace_floats(const SsdProblem& problem, DType dtype);

// y (Bt, T, H, P) in dtype and final_state (Bt, H, P, N) f32.
void ssd_forward(const SsdProblem& problem, const SsdInputs& in, void* y, float* final_state,
                 float* workspace, DType dtype, cudaStream_t stream);

// forward_workspace: the workspace ssd_forward filled for these inputs (read only; saving it costs
// memory, recomputing it cost 0.2 ms of the 1b layer's 4.6 ms forward + backward). dy (Bt, T, H,
// P) is required, in f32 or in the activations' dtype (a bf16 dy is exact in the bf16 products and
// spares them the lo part an fp32 one needs); d_final_state (Bt, H, P, N) f32 may be nullptr (zero). Parameter gradients
// are reduced in a fixed order (per-chunk partials, then one pass per head): results are bitwise
// reproducible. No atomics.
void ssd_backward(const SsdProblem& problem, const SsdInputs& in, const float* forward_workspace,
                  const void* dy, DType dy_dtype, const float* d_final_state, const SsdGrads& grads,
                  float* workspace, DType dtype, cudaStream_t stream);

}  // namespace braid::kernels::cuda
