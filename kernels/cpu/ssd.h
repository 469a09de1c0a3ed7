// Mamba-2 SSD scan, chunked (MODEL.md section 3, KERNELS.md sections 2-4), forward and backward.
// x (Bt, T, H, P), dt_raw (Bt, T, H), B and C (Bt, T, G, N), dt_bias, A_log and D (H), initial and
// final states (Bt, H, P, N). delta = clamp(softplus(dt_raw + dt_bias)), A = -exp(A_log), head h
// reads group h / (H/G); y = SSD(x, delta, A, B, C; S_init) + D * x, plus the final state.
// Nothing is saved between the passes: the backward recomputes delta, the chunk cumsums, C.B and
// the chunk-entering states from the inputs (as mamba_ssm does), so the caller keeps only inputs.
#pragma once

#include <cstdint>
#include <limits>

namespace braid::kernels::cpu {

struct SsdProblem {
  int64_t batch = 0, seq = 0, heads = 0, head_dim = 0, groups = 0, state = 0;  // Bt, T, H, P, G, N
  int64_t chunk = 64;  // Q: any positive size; the last chunk is short when Q does not divide T
  double dt_min = 0;   // delta is clamped to [dt_min, dt_max]; the defaults never bind
  double dt_max = std::numeric_limits<double>::infinity();
};

template <typename T>
struct SsdInputs {
  const T* x;
  const T* dt_raw;
  const T* dt_bias;
  const T* A_log;
  const T* B;
  const T* C;
  const T* D;
  const T* initial_state;  // nullptr: the scan starts from zeros
};

// Every pointer is written in full (no accumulation); initial_state may be nullptr (not wanted).
template <typename T>
struct SsdGrads {
  T* x;
  T* dt_raw;
  T* dt_bias;
  T* A_log;
  T* B;
  T* C;
  T* D;
  T* initial_state;
};

template <typename T>
void ssd_forward(const SsdProblem& problem, const SsdInputs<T>& in, T* y, T* final_state);

// dy (Bt, T, H, P) is required; d_final_state (Bt, H, P, N) may be nullptr (zero). The parameter
// gradients (dt_bias, A_log, D) and the group sums of dB, dC are taken in double in a fixed order:
// results do not depend on the thread count.
template <typename T>
void ssd_backward(const SsdProblem& problem, const SsdInputs<T>& in, const T* dy,
                  const T* d_final_state, const SsdGrads<T>& grads);

}  // namespace braid::kernels::cpu
