#pragma once

#include "autograd/variable.h"

namespace braid::ops {

// 1 / (1 + e^-x), elementwise.
autograd::Var sigmoid(const autograd::Var& x);
// x * s for a one-element s (a learnable scalar).
autograd::Var mul_scalar(const autograd::Var& x, const autograd::Var& s);

}  // namespace braid::ops
