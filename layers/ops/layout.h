// Layout ops with gradients: reshape, narrow (a slice along one dimension), split, concat and cast (a
// change of floating dtype, e.g. fp32 embeddings into bf16 activations). They move data with the
// runtime's copies, so they work on every device. Also the row views that let a kernel read a slice of
// a wider tensor in place instead of a contiguous copy of it.
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

// The distance in elements between consecutive rows of x seen as a matrix (rows, x.size(-1)): set
// when the last dimension is unit-stride and the leading ones step as one run of rows (a contiguous
// tensor, or a narrow() of its last dimension); -1 otherwise.
int64_t row_stride(const Tensor& x);
// x itself when a kernel taking a row stride can read it in place: contiguous, or rows (row_stride
// >= 0) that all start `alignment`-byte aligned (16 for a vectorized kernel, as a fresh tensor's rows
// are, so it takes the path it would take on a copy; 1 for one that reads element by element);
// otherwise a contiguous copy.
Tensor rows_in_place(const Tensor& x, int64_t alignment = 16);

}  // namespace braid::ops
