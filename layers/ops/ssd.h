#pragma once

#include <cstdint>
#include <limits>

#include "autograd/variable.h"

namespace braid::ops {

struct SsdOptions {
  int64_t chunk = 64;  // chunk length Q of the chunked algorithm; any positive size
  double dt_min = 0;   // delta = softplus(dt_raw + dt_bias) is clamped to [dt_min, dt_max]
  double dt_max = std::numeric_limits<double>::infinity();
};

struct SsdOutputs {
  autograd::Var y;            // (Bt, T, H, P)
  autograd::Var final_state;  // (Bt, H, P, N)
};

// The Mamba-2 SSD scan with its D skip (MODEL.md section 3): x (Bt, T, H, P), dt_raw (Bt, T, H),
// dt_bias, A_log and D (H), B and C (Bt, T, G, N) with H % G == 0, initial_state (Bt, H, P, N) or
// nullptr (zeros). Gradients flow from both outputs into every input. The autograd node keeps only
// the inputs; its backward recomputes delta, the chunk cumsums and the chunk states.
SsdOutputs ssd(const autograd::Var& x, const autograd::Var& dt_raw, const autograd::Var& dt_bias,
               const autograd::Var& A_log, const autograd::Var& B, const autograd::Var& C,
               const autograd::Var& D, const autograd::Var& initial_state,
               const SsdOptions& options = {});

}  // namespace braid::ops
