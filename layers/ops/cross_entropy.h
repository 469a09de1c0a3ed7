#pragma once

#include <cstdint>

#include "autograd/variable.h"

namespace braid::ops {

// Mean softmax cross-entropy of logits (rows, V) against integer targets (rows) in [0, V) (dtype
// i32, i64, u16 or u32), as a one-element tensor of shape [1]: in the logits' dtype on the CPU, f32
// on CUDA (logits f32 or bf16). The targets get no gradient.
autograd::Var cross_entropy(const autograd::Var& logits, const autograd::Var& targets);

// The tied LM head and its loss in one op (MODEL.md section 1): the mean softmax cross-entropy of
// logits = hidden weightᵀ against targets, equal to cross_entropy(linear(hidden, weight), targets)
// but without ever holding the logits of every row. hidden is (..., d), an activation; weight is
// (V, d), a parameter (f32 when hidden is bf16); targets hold one integer per hidden row (shape
// [rows] or hidden's leading shape). Returns the loss [1]: hidden's dtype on the CPU, f32 on CUDA.
//
// Rows run in chunks of chunk_rows (0: as many as keep one chunk's logits within 256 MiB, evened
// out over the chunks). Per chunk a GEMM makes the logits, a row kernel turns them into loss terms
// and, in place, into d_logits = (softmax - one-hot) / rows, and two GEMMs add the chunk's share of
// d_hidden = d_logits weight and d_weight = d_logitsᵀ hidden. Because the loss is a scalar, the
// gradients are computed during the forward whenever they will be wanted (grad enabled and hidden or
// weight requiring it); backward only scales them by the incoming gradient. On CUDA in bf16 the GEMMs
// read a bf16 copy of the weight made once per call; the gradients come back in f32.
autograd::Var lm_head_cross_entropy(const autograd::Var& hidden, const autograd::Var& weight,
                                    const autograd::Var& targets, int64_t chunk_rows = 0);

}  // namespace braid::ops
