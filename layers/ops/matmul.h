#pragma once

#include <vector>

#include "autograd/variable.h"

namespace braid::ops {

// op(a) * op(b) for 2-D a and b, where op transposes when asked: op(a) is (M, K), op(b) is (K, N),
// the result (M, N).
autograd::Var matmul(const autograd::Var& a, const autograd::Var& b, bool trans_a = false,
                     bool trans_b = false);

// A linear layer without bias (MODEL.md section 1): x (..., in), weight (out, in) -> (..., out),
// y = x * weightᵀ over every leading index.
autograd::Var linear(const autograd::Var& x, const autograd::Var& weight);

// linear() with the promise that no kernel writes the weight while the product may run (true of a
// model's weights while it serves), which lets a few-row bf16 product on the GPU start reading it
// before the kernel ahead of it ends (kernels/cuda/gemv.h).
autograd::Var linear_of_constant_weight(const autograd::Var& x, const autograd::Var& weight);

// linear_of_constant_weight() of the same x with each weight: on the GPU, few bf16 rows take one
// launch for all of them (an FFN's gate and up projections, an attention's q, k and v).
std::vector<autograd::Var> linears_of_constant_weights(const autograd::Var& x,
                                                       const std::vector<autograd::Var>& weights);

// swiglu(x gate_weightᵀ, x up_weightᵀ) (an FFN's hidden activation) for serving: without gradients,
// few bf16 rows on the GPU take one launch that writes only the activation (kernels/cuda/gemv.h);
// otherwise the two products and the SwiGLU op, with the same result.
autograd::Var swiglu_of_constant_weights(const autograd::Var& x, const autograd::Var& gate_weight,
                                         const autograd::Var& up_weight);

}  // namespace braid::ops
