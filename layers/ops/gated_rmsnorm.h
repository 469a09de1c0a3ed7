#pragma once

#include <cstdint>

#include "autograd/variable.h"

namespace braid::ops {

// Mamba-2's gated RMSNorm, gate before the norm (MODEL.md section 3): v = y * SiLU(z), normalized
// by its RMS over each of `groups` groups of C / groups channels of the last dimension, times
// weight (C). y and z have the same shape (any leading dims); without a tape, z may be a row view
// (layout.h's rows_in_place), read without a copy.
autograd::Var gated_rmsnorm(const autograd::Var& y, const autograd::Var& z,
                            const autograd::Var& weight, int64_t groups, double eps = 1e-5);

}  // namespace braid::ops
