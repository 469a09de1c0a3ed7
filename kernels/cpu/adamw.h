// One AdamW step (Loshchilov & Hutter, decoupled weight decay; the form PyTorch's AdamW uses) on n
// parameters, with the state MODEL.md section 8 prescribes: fp32 master weights and moments.
//   p -= lr * weight_decay * p
//   m  = beta1 * m + (1 - beta1) * g
//   v  = beta2 * v + (1 - beta2) * g²
//   p -= lr * (m / (1 - beta1^step)) / (sqrt(v / (1 - beta2^step)) + eps)
#pragma once

#include <cstdint>

namespace braid::kernels::cpu {

// Updates param, m and v in place; `step` counts from 1 (the first step's bias correction).
template <typename T>
void adamw_step(T* param, const T* grad, T* m, T* v, int64_t n, double lr, double beta1,
                double beta2, double eps, double weight_decay, int64_t step);

}  // namespace braid::kernels::cpu
