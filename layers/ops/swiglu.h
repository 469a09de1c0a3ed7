#pragma once

#include "autograd/variable.h"

namespace braid::ops {

// SiLU(gate) * up, elementwise; gate and up have the same shape.
autograd::Var swiglu(const autograd::Var& gate, const autograd::Var& up);

}  // namespace braid::ops
