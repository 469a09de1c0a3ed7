#pragma once

#include "autograd/variable.h"

namespace braid::ops {

// a + b, a - b, a * b elementwise; a and b have the same shape and dtype.
autograd::Var add(const autograd::Var& a, const autograd::Var& b);
autograd::Var sub(const autograd::Var& a, const autograd::Var& b);
autograd::Var mul(const autograd::Var& a, const autograd::Var& b);
// a * factor.
autograd::Var scale(const autograd::Var& a, double factor);
// Sum / mean of every element, as a one-element tensor of shape [1].
autograd::Var sum(const autograd::Var& a);
autograd::Var mean(const autograd::Var& a);
// x (..., C) * v (C), v broadcast over the leading dimensions (per-channel scaling).
autograd::Var mul_broadcast_last(const autograd::Var& x, const autograd::Var& v);

}  // namespace braid::ops
