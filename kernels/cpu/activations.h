// Scalar activation functions shared by the CPU kernels (KERNELS.md section 0).
#pragma once

#include <cmath>

namespace braid::kernels::cpu {

template <typename T> inline T sigmoid(T u) { return T(1) / (T(1) + std::exp(-u)); }
template <typename T> inline T silu(T u) { return u * sigmoid(u); }
// d SiLU(u) / du = sigma(u) * (1 + u * (1 - sigma(u)))
template <typename T> inline T silu_grad(T u) {
  T s = sigmoid(u);
  return s * (T(1) + u * (T(1) - s));
}
// softplus(u) = ln(1 + e^u), taken as u above 20 (mamba_ssm's threshold); derivative sigma(u).
template <typename T> inline T softplus(T u) { return u > T(20) ? u : std::log1p(std::exp(u)); }

}  // namespace braid::kernels::cpu
