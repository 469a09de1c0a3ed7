// Layout ops with gradients: reshape, narrow (a slice along one dimension), split, concat and cast (a
// change of floating dtype, e.g. fp32 embeddings into bf16 activations). They move data with the
// runtime's copies, so they work on every device.
#pragma once

#include <cstdint>
#include <vector>

#include "autograd/variable.h"

namespace braid::ops {

// A view of a contiguous input with another shape (one -1 inferred); copies when not contiguous.
autograd::Var reshape(const autograd::Var& x, const Shape& shape);
// Elements [start, start + length) along `dim`, as a new contiguous tensor.
autograd::Var narrow(const autograd::Var& x, int64_t dim, int64_t start, int64_t length);
// Consecutive parts of `dim` with the given sizes (summing to its size), each a new contiguous
// tensor; one backward writes all their gradients into one input gradient.
std::vector<autograd::Var> split(const autograd::Var& x, int64_t dim, const std::vector<int64_t>& sizes);
// Joins along `dim`; every other dimension must match.
autograd::Var concat(const std::vector<autograd::Var>& parts, int64_t dim);
// x in another floating dtype (x itself when it already has it); the gradient flows back in x's
// gradient dtype.
autograd::Var cast(const autograd::Var& x, DType dtype);

}  // namespace braid::ops
