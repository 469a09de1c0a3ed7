// Argument checks at op entry. Each raises braid::Error naming the op and both shapes/dtypes.
#pragma once

#include "runtime/tensor.h"

namespace braid::ops {

// `tensor` (called `what`) must have exactly `expected` shape.
void check_shape(const char* op, const char* what, const Tensor& tensor, const Shape& expected);
// `a` and `b` must have the same shape.
void check_same_shape(const char* op, const char* what_a, const Tensor& a, const char* what_b,
                      const Tensor& b);
// `tensor` must have `dims` dimensions.
void check_dim(const char* op, const char* what, const Tensor& tensor, int64_t dims);
// `a` and `b` must have the same dtype and device.
void check_same_type(const char* op, const char* what_a, const Tensor& a, const char* what_b,
                     const Tensor& b);
// `tensor` must be floating point / of this dtype.
void check_floating(const char* op, const char* what, const Tensor& tensor);
void check_dtype(const char* op, const char* what, const Tensor& tensor, DType dtype);
// Until the CUDA backend lands, ops run on the CPU only.
void check_cpu(const char* op, const Tensor& tensor);

}  // namespace braid::ops
