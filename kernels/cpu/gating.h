// Gates of the intra-hybrid block's scaling options (MODEL.md section 4): a sigmoid, and the
// product of a tensor with one learnable scalar.
#pragma once

#include <cstdint>

namespace braid::kernels::cpu {

template <typename T> void sigmoid_forward(const T* x, T* out, int64_t n);
// d_x = d_out * out * (1 - out), from the saved output.
template <typename T> void sigmoid_backward(const T* out, const T* d_out, T* d_x, int64_t n);

template <typename T> void mul_scalar_forward(const T* x, T scalar, T* out, int64_t n);
// d_x = d_out * scalar; returns d_scalar = sum(d_out * x), summed in double in index order.
template <typename T> double mul_scalar_backward(const T* x, T scalar, const T* d_out, T* d_x, int64_t n);

}  // namespace braid::kernels::cpu
