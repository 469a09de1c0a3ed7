#pragma once

#include <cstdint>

#include "autograd/variable.h"

namespace braid::ops {

// GroupNorm over the last dimension C of x (any leading dims), split into `groups` groups of
// C / groups channels, each normalized by its own mean and biased variance, then
// * weight + bias per channel (weight, bias: (C)). MODEL.md section 4's branch norm.
autograd::Var group_norm(const autograd::Var& x, const autograd::Var& weight,
                         const autograd::Var& bias, int64_t groups, double eps = 1e-5);

}  // namespace braid::ops
