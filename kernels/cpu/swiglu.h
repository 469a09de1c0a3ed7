// SwiGLU gate: h = SiLU(gate) * up, elementwise (MODEL.md section 1). The two matrix products
// around it are ordinary linears.
#pragma once

#include <cstdint>

namespace braid::kernels::cpu {

template <typename T>
void swiglu_forward(const T* gate, const T* up, T* out, int64_t n);

// d_gate = d_out * up * SiLU'(gate);  d_up = d_out * SiLU(gate).
template <typename T>
void swiglu_backward(const T* gate, const T* up, const T* d_out, T* d_gate, T* d_up, int64_t n);

}  // namespace braid::kernels::cpu
