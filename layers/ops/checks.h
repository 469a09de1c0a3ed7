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
// Ops whose CUDA kernel has not landed yet run on the CPU only.
void check_cpu(const char* op, const Tensor& tensor);
// `x` (an activation) is on a backend that computes in its dtype: the CPU in f32 or f64, or in a
// CUDA build a CUDA device in f32 or bf16 (DESIGN.md "Precision").
void check_backend(const char* op, const char* what, const Tensor& x);
// `param` (a parameter read next to activation `x`) lives on x's device and is f32 when x is bf16
// (fp32 master weights under mixed precision), else x's dtype.
void check_param(const char* op, const char* what, const Tensor& param, const Tensor& x);

}  // namespace braid::ops
