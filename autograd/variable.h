// Variable: a tensor the tape can track, with the gradient accumulated into it by backward().
//
// Parameters and inputs are leaves (made with `leaf`); op outputs are made by `record` (tape.h).
// A gradient has its value's dtype: fp32 master weights get fp32 gradients, bf16 activations bf16
// gradients (as under PyTorch's autocast: half the bytes in every backward kernel and no rounding
// pass before each bf16 GEMM), f64 values (gradcheck) f64. One exception keeps precision and a pass:
// a bf16 value whose first gradient arrives in fp32 (from a kernel that computes in fp32, like the
// SSD's) keeps it in fp32; whoever consumes it rounds it if it needs bf16.
#pragma once

#include <memory>
#include <string>

#include "runtime/tensor.h"

namespace braid::autograd {

class Variable {
 public:
  Tensor value;
  Tensor grad;                 // undefined until backward reaches this variable
  bool requires_grad = false;
  bool is_leaf = true;
  std::string name;            // parameters carry their dotted path; others may be empty
};

using Var = std::shared_ptr<Variable>;

// A leaf: a parameter (requires_grad = true) or a plain input.
Var leaf(Tensor value, bool requires_grad = false, std::string name = "");

// The dtype gradients of `value` are kept in (the value's own float dtype).
DType grad_dtype(DType value_dtype);

// grad += delta (allocating grad on first use), summed in fp32 and stored in the gradient's dtype.
// `delta` may have any float dtype. With `adopt`, a first gradient that nobody else holds becomes
// the gradient itself instead of being copied.
void accumulate_grad(Variable& variable, const Tensor& delta, bool adopt = false);

}  // namespace braid::autograd
