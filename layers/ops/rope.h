#pragma once

#include <cstdint>
#include <vector>

#include "autograd/variable.h"

namespace braid::ops {

// RoPE frequencies (MODEL.md section 2). Defaults: the Transformer layers' base 500000 with
// Llama-3 scaling; SWA layers use theta 10000.
struct RopeConfig {
  double theta = 500000;
  bool llama3_scaling = true;
  double factor = 32, low_freq_factor = 1, high_freq_factor = 4;
  int64_t original_context = 8192;
};

// The head_dim / 2 inverse frequencies f_i = theta^(-2i / head_dim). With Llama-3 scaling, for the
// wavelength L = 2 pi / f_i: L < original_context / high_freq_factor keeps f_i;
// L > original_context / low_freq_factor uses f_i / factor; otherwise blends them with
// s = (original_context / L - low_freq_factor) / (high_freq_factor - low_freq_factor):
// (1 - s) f_i / factor + s f_i. head_dim must be even and positive.
std::vector<double> rope_inverse_frequencies(const RopeConfig& config, int64_t head_dim);

// Rotate-half RoPE of x (B, T, H, D) at positions position_offset + t (see kernels/cpu/rope.h).
autograd::Var rope(const autograd::Var& x, const RopeConfig& config = {},
                   int64_t position_offset = 0);

}  // namespace braid::ops
