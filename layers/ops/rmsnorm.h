#pragma once

#include "autograd/variable.h"

namespace braid::ops {

// x / sqrt(mean(x²) + eps) * weight over the last dimension: x (..., d), weight (d) (MODEL.md
// section 1).
autograd::Var rmsnorm(const autograd::Var& x, const autograd::Var& weight, double eps = 1e-5);

struct AddRmsnormResult {
  autograd::Var sum;     // x + residual: the residual stream after the block
  autograd::Var normed;  // rmsnorm(sum, weight, eps)
};

// The pre-norm block's "add the branch, normalize for the next one" in one pass; gradients flow
// into x and residual from both outputs.
AddRmsnormResult add_rmsnorm(const autograd::Var& x, const autograd::Var& residual,
                             const autograd::Var& weight, double eps = 1e-5);

}  // namespace braid::ops
