// Softmax cross-entropy of next-token prediction (MODEL.md section 1: loss = mean cross-entropy):
// logits (rows, V), integer targets (rows) in [0, V); loss = mean over rows of lse[r] - logits[r,
// t_r] with lse[r] = log sum_j exp(logits[r, j]), computed after subtracting the row's maximum.
// cross_entropy_rows is the per-row kernel of the LM head's fused loss (layers/ops/cross_entropy.h,
// lm_head_cross_entropy): loss terms and, in place, the logits' gradient of one chunk of rows.
#pragma once

#include <cstdint>

namespace braid::kernels::cpu {

// Writes lse (rows) and returns the mean loss, summed over rows in order (deterministic).
template <typename T>
double cross_entropy_forward(const T* logits, const int64_t* targets, T* lse, int64_t rows,
                             int64_t vocab);

// d_logits[r, j] = (softmax(logits[r])[j] - [j == t_r]) * d_loss / rows, written fresh.
template <typename T>
void cross_entropy_backward(const T* logits, const int64_t* targets, const T* lse, T d_loss,
                            T* d_logits, int64_t rows, int64_t vocab);

// Per row r of logits (rows, vocab) stored with row stride ld >= vocab, targets already checked to
// lie in [0, vocab):
//   lse[r]      = log sum_j exp(logits[r, j])        (skipped when lse is null)
//   row_loss[r] = lse[r] - logits[r, t_r]
// and with write_gradient the row is then overwritten in place by its gradient
//   logits[r, j] = (softmax(logits[r])[j] - [j == t_r]) * grad_scale
// (grad_scale = 1 / total rows for a mean loss). Columns from vocab to ld are never touched. The sum
// of exponentials is accumulated in double (exact enough to be the CUDA kernel's oracle at V = 50K).
template <typename T>
void cross_entropy_rows(T* logits, int64_t ld, const int64_t* targets, T* lse, T* row_loss,
                        bool write_gradient, T grad_scale, int64_t rows, int64_t vocab);

}  // namespace braid::kernels::cpu
