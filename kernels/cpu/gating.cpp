#include "kernels/cpu/gating.h"

#include "kernels/cpu/activations.h"

namespace braid::kernels::cpu {

template <typename T>
void sigmoid_forward(const T* x, T* out, int64_t n) {
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n; ++i) out[i] = sigmoid(x[i]);
}

template <typename T>
void sigmoid_backward(const T* out, const T* d_out, T* d_x, int64_t n) {
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n; ++i) d_x[i] = d_out[i] * out[i] * (T(1) - out[i]);
}

template <typename T>
void mul_scalar_forward(const T* x, T scalar, T* out, int64_t n) {
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n; ++i) out[i] = x[i] * scalar;
}

template <typename T>
double mul_scalar_backward(const T* x, T scalar, const T* d_out, T* d_x, int64_t n) {
  double d_scalar = 0;
  for (int64_t i = 0; i < n; ++i) {
    d_x[i] = d_out[i] * scalar;
    d_scalar += double(d_out[i]) * double(x[i]);
  }
  return d_scalar;
}

#define BRAID_INSTANTIATE(T)                                                     \
  template void sigmoid_forward<T>(const T*, T*, int64_t);                       \
  template void sigmoid_backward<T>(const T*, const T*, T*, int64_t);            \
  template void mul_scalar_forward<T>(const T*, T, T*, int64_t);                 \
  template double mul_scalar_backward<T>(const T*, T, const T*, T*, int64_t);
BRAID_INSTANTIATE(float)
BRAID_INSTANTIATE(double)
#undef BRAID_INSTANTIATE

}  // namespace braid::kernels::cpu
