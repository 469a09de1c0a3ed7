// Rotary position embedding, rotate-half / NeoX pairing (MODEL.md section 2): for x (B, T, H, D),
// dimension i < D/2 pairs with i + D/2, and the pair rotates by angle (position_offset + t) * f_i:
//     out[i]       = x[i] * cos - x[i + D/2] * sin
//     out[i + D/2] = x[i + D/2] * cos + x[i] * sin
// The inverse frequencies f (D/2 values, see ops::rope_inverse_frequencies) come from the caller.
#pragma once

#include <cstdint>

namespace braid::kernels::cpu {

// Angles, cosines and sines are computed in double, then applied in T.
template <typename T>
void rope_forward(const T* x, T* out, const double* inverse_frequencies, int64_t batch,
                  int64_t time, int64_t heads, int64_t head_dim, int64_t position_offset);

// The inverse rotation (the rotation is orthogonal, so its transpose is its inverse).
template <typename T>
void rope_backward(const T* d_out, T* d_x, const double* inverse_frequencies, int64_t batch,
                   int64_t time, int64_t heads, int64_t head_dim, int64_t position_offset);

}  // namespace braid::kernels::cpu
