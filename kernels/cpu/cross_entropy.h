// Softmax cross-entropy of next-token prediction (MODEL.md section 1: loss = mean cross-entropy):
// logits (rows, V), integer targets (rows) in [0, V); loss = mean over rows of lse[r] - logits[r,
// t_r] with lse[r] = log sum_j exp(logits[r, j]), computed after subtracting the row's maximum.
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

}  // namespace braid::kernels::cpu
