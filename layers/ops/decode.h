// Inference-only ops over the decode caches (KERNELS.md section 6; kernels/cpu/decode.h for the
// exact contracts). They run under no-grad, so they take and return plain Tensors and record no
// autograd node; each checks its arguments and dispatches to the CPU or CUDA kernel. Lengths,
// positions and slots are i32 tensors on the activations' device.
#pragma once

#include "layers/ops/attention.h"
#include "layers/ops/rope.h"
#include "layers/ops/ssd.h"
#include "runtime/tensor.h"

namespace braid::ops {

// q (B, Tq, Hq, Dqk) over k_cache (B, Hk, S, Dqk), v_cache (B, Hk, S, Dv), lengths (B) ->
// (B, Tq, Hq, Dv). Query t of sequence b sits at slot lengths[b] - Tq + t; options.window/sink mask
// in slot coordinates.
Tensor cache_attention(const Tensor& q, const Tensor& k_cache, const Tensor& v_cache,
                       const Tensor& lengths, const AttentionOptions& options);

// cache (B, H, S, D) contiguous, written in place: cache[b, :, slots[b, t]] = values[b, t];
// values (B, Tq, H, D), slots (B, Tq), negative = skip.
void kv_cache_write(const Tensor& cache, const Tensor& values, const Tensor& slots);

// RoPE of x (B, Tq, H, D) with token t of sequence b at position positions[b] + t.
Tensor rope_at_positions(const Tensor& x, const Tensor& positions, const RopeConfig& config);

// One conv token: state (B, C, W-1) updated in place, x (B, C) -> SiLU(conv) (B, C). x may be a view
// of rows at a stride (e.g. columns of a wider projection), read in place.
Tensor conv_state_update(const Tensor& state, const Tensor& x, const Tensor& weight, const Tensor& bias,
                         bool silu = true);

// A decode step's indices from the tokens each sequence holds, advanced in place on the tensor's
// device: indices (5, B) i32 contiguous, rows positions, full_lengths, window_slots, window_lengths,
// lengths (kernels/cuda/decode.h). Only `lengths` is read; the other rows are written, and lengths
// grows by one. window == 0: no window (slot = position).
void decode_step_indices(const Tensor& indices, int64_t window, int64_t sink, int64_t window_capacity);

// One SSM token: state (B, H, P, N) (fp32; x's dtype on the CPU) updated in place, x (B, H*P),
// dt_raw (B, H), B and C (B, G*N), dt_bias, A_log, D (H) -> y (B, H*P), D skip included. H, P and N
// come from the state. x, dt_raw, B and C may be views of rows at a stride (e.g. column slices of
// one projection), read in place.
Tensor ssm_state_update(const Tensor& state, const Tensor& x, const Tensor& dt_raw,
                        const Tensor& dt_bias, const Tensor& A_log, const Tensor& B, const Tensor& C,
                        const Tensor& D, const SsdOptions& options);

}  // namespace braid::ops
