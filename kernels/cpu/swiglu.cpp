#include "kernels/cpu/swiglu.h"

#include "kernels/cpu/activations.h"

namespace braid::kernels::cpu {

template <typename T>
void swiglu_forward(const T* gate, const T* up, T* out, int64_t n, int64_t columns, int64_t gate_row_stride) {
  if (gate_row_stride == 0 || gate_row_stride == columns) {
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; ++i) out[i] = silu(gate[i]) * up[i];
    return;
  }
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n; ++i) out[i] = silu(gate[i / columns * gate_row_stride + i % columns]) * up[i];
}

template <typename T>
void swiglu_backward(const T* gate, const T* up, const T* d_out, T* d_gate, T* d_up, int64_t n) {
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n; ++i) {
    d_gate[i] = d_out[i] * up[i] * silu_grad(gate[i]);
    d_up[i] = d_out[i] * silu(gate[i]);
  }
}

template void swiglu_forward<float>(const float*, const float*, float*, int64_t, int64_t, int64_t);
template void swiglu_forward<double>(const double*, const double*, double*, int64_t, int64_t, int64_t);
template void swiglu_backward<float>(const float*, const float*, const float*, float*, float*, int64_t);
template void swiglu_backward<double>(const double*, const double*, const double*, double*, double*,
                                      int64_t);

}  // namespace braid::kernels::cpu
