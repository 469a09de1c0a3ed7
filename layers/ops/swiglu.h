#pragma once

#include "autograd/variable.h"

namespace braid::ops {

// SiLU(gate) * up, elementwise; gate and up have the same shape. Without a tape the gate may be a
// row view (layout.h's rows_in_place), read without a copy.
autograd::Var swiglu(const autograd::Var& gate, const autograd::Var& up);

}  // namespace braid::ops
