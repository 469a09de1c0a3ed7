#pragma once

#include <cstdint>

#include "autograd/variable.h"

namespace braid::ops {

// Key s is visible from query t iff s <= t AND (window == 0 OR t - s < window OR s < sink):
// window 0 is plain causal; the SWA layer uses window 512, sink 64 (kernels/cpu/attention.h).
struct AttentionOptions {
  int64_t window = 0;
  int64_t sink = 0;
  double scale = 0;  // 0 means 1 / sqrt(Dqk)
};

// Causal grouped-query attention (MODEL.md section 2): q (B, T, Hq, Dqk), k (B, T, Hk, Dqk),
// v (B, T, Hk, Dv) -> (B, T, Hq, Dv). Hq % Hk == 0; query head h reads kv head h / (Hq / Hk).
autograd::Var attention(const autograd::Var& q, const autograd::Var& k, const autograd::Var& v,
                        const AttentionOptions& options = {});

}  // namespace braid::ops
