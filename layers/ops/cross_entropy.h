#pragma once

#include "autograd/variable.h"

namespace braid::ops {

// Mean softmax cross-entropy of logits (rows, V) against integer targets (rows) in [0, V) (dtype
// i32, i64, u16 or u32), as a one-element tensor of shape [1]. The targets get no gradient.
autograd::Var cross_entropy(const autograd::Var& logits, const autograd::Var& targets);

}  // namespace braid::ops
