// SwiGLU gate h = SiLU(gate) * up, elementwise, the CUDA twin of kernels/cpu/swiglu.h (MODEL.md
// section 1). gate, up, out and their gradients: n elements in `dtype` (f32 or bf16); the
// arithmetic is fp32.
// Strategy: grid-stride loop, each thread handling a few independent 16-byte vectors per step
// (scalar accesses when a pointer is not 16-byte aligned, and for the n % width tail).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "runtime/dtype.h"

namespace braid::kernels::cuda {

// gate may be rows of `columns` elements lying gate_row_stride apart (0: contiguous), as in the
// CPU twin.
void swiglu_forward(const void* gate, const void* up, void* out, int64_t n, DType dtype,
                    cudaStream_t stream, int64_t columns = 0, int64_t gate_row_stride = 0);

// d_gate = d_out * up * SiLU'(gate);  d_up = d_out * SiLU(gate). d_out, d_gate, d_up in `dtype`
// like gate and up (an activation's gradient has its dtype: autograd/variable.h).
void swiglu_backward(const void* gate, const void* up, const void* d_out, void* d_gate,
                     void* d_up, int64_t n, DType dtype, cudaStream_t stream);

}  // namespace braid::kernels::cuda
