// Small elementwise and reduction kernels on flat arrays of n elements, plus the per-channel scale
// out (rows, C) = x (rows, C) * v (C) broadcast over rows. The residual adds, branch mixing and
// loss bookkeeping of MODEL.md section 1 are built from them.
#pragma once

#include <cstdint>

namespace braid::kernels::cpu {

template <typename T>
void add(const T* a, const T* b, T* out, int64_t n);
template <typename T>
void sub(const T* a, const T* b, T* out, int64_t n);
template <typename T>
void mul(const T* a, const T* b, T* out, int64_t n);
template <typename T>
void scale(const T* a, T factor, T* out, int64_t n);

// Sum of n elements, accumulated in double over fixed-size blocks, so the result does not depend on
// the number of threads.
template <typename T>
double sum(const T* a, int64_t n);
// Sum of squares, the same way (the global gradient norm).
template <typename T>
double sum_of_squares(const T* a, int64_t n);

template <typename T>
void mul_broadcast_last_forward(const T* x, const T* v, T* out, int64_t rows, int64_t channels);

// d_x = d_out * v;  d_v[c] = sum over rows of d_out[r, c] * x[r, c], summed in row order.
template <typename T>
void mul_broadcast_last_backward(const T* x, const T* v, const T* d_out, T* d_x, T* d_v,
                                 int64_t rows, int64_t channels);

}  // namespace braid::kernels::cpu
