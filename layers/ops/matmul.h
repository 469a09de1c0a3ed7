#pragma once

#include "autograd/variable.h"

namespace braid::ops {

// op(a) * op(b) for 2-D a and b, where op transposes when asked: op(a) is (M, K), op(b) is (K, N),
// the result (M, N).
autograd::Var matmul(const autograd::Var& a, const autograd::Var& b, bool trans_a = false,
                     bool trans_b = false);

// A linear layer without bias (MODEL.md section 1): x (..., in), weight (out, in) -> (..., out),
// y = x * weightᵀ over every leading index.
autograd::Var linear(const autograd::Var& x, const autograd::Var& weight);

}  // namespace braid::ops
