// SwiGLU gate: h = SiLU(gate) * up, elementwise (MODEL.md section 1). The two matrix products
// around it are ordinary linears.
#pragma once

#include <cstdint>

namespace braid::kernels::cpu {

// gate may be rows of `columns` elements lying gate_row_stride apart (0: contiguous like up and
// out), so a slice of a wider projection is read in place.
template <typename T>
void swiglu_forward(const T* gate, const T* up, T* out, int64_t n, int64_t columns = 0,
                    int64_t gate_row_stride = 0);

// d_gate = d_out * up * SiLU'(gate);  d_up = d_out * SiLU(gate).
template <typename T>
void swiglu_backward(const T* gate, const T* up, const T* d_out, T* d_gate, T* d_up, int64_t n);

}  // namespace braid::kernels::cpu
