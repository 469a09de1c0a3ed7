// Variable: a tensor the tape can track, with the gradient accumulated into it by backward().
//
// Parameters and inputs are leaves (made with `leaf`); op outputs are made by `record` (tape.h).
// Gradients are fp32 for f32/bf16 values and f64 for f64 values (gradcheck).
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

// The dtype gradients of `value` are kept in.
DType grad_dtype(DType value_dtype);

// grad += delta (allocating grad on first use). `delta` may have any float dtype. With `adopt`, a
// first gradient that nobody else holds becomes the gradient itself instead of being copied.
void accumulate_grad(Variable& variable, const Tensor& delta, bool adopt = false);

}  // namespace braid::autograd
