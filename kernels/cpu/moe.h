// MoE routing (MODEL.md section 5): token-choice router with sigmoid scores and a selection-only
// bias, the expert-major permutation of the routed token-slots, the gather of token rows into that
// order and the weighted combine back, and the auxiliary-loss-free bias update; plus the dense form
// of the route an inference decode step uses (every expert on every row, weighted by gates that are
// zero off the selection), which needs no host-side offsets.
// Shapes: logits (n, E); indices, weights (n, k); slot s = t*k + j; order (n*k) lists the slots
// expert-major; offsets (E+1) bound each expert's rows; gather x (n, d) -> xs (n*k, d); combine
// ys (n*k, d) -> out (n, d); dense gates (n, E); dense combine ys (E*n, d) -> out (n, d).
#pragma once

#include <cstdint>

namespace braid::kernels::cpu {

// Per token: the k experts with the largest sigmoid(logit) + bias, best first, ties to the lower
// index; weights are the unbiased sigmoid scores of those experts, divided by their sum when
// `normalize`. load[e] counts the token-slots routed to expert e.
template <typename T>
void moe_route_forward(const T* logits, const T* bias, int64_t n, int64_t num_experts, int64_t k,
                       bool normalize, int32_t* indices, T* weights, int64_t* load);

// gates (n, E): moe_route_forward's weights at the experts it selects (gates[t, indices[t, j]] =
// weights[t, j]) and zero at every other expert.
template <typename T>
void moe_dense_gates(const T* logits, const T* bias, int64_t n, int64_t num_experts, int64_t k,
                     bool normalize, T* gates);

// out[t] = sum over e of gates[t, e] * ys[e*n + t] (ys stacks every expert's output on all n rows,
// expert-major), in e order; experts with a zero gate are skipped, so the sum runs over the selected
// experts only.
template <typename T>
void moe_dense_combine(const T* ys, const T* gates, int64_t n, int64_t num_experts, int64_t d,
                       T* out);

// d_logits from d_weights: sigma' at the selected entries (after the quotient rule when
// `normalize`), zero elsewhere.
template <typename T>
void moe_route_backward(const T* logits, const int32_t* indices, const T* d_weights, int64_t n,
                        int64_t num_experts, int64_t k, bool normalize, T* d_logits);

// Stable counting sort of the slots by expert: expert e's slots, in increasing token order, are
// order[offsets[e] .. offsets[e+1]).
void moe_permute(const int32_t* indices, int64_t n, int64_t k, int64_t num_experts, int32_t* order,
                 int64_t* offsets);

// xs[p] = x[order[p] / k].
template <typename T>
void moe_gather_forward(const T* x, const int32_t* order, int64_t n, int64_t k, int64_t d, T* xs);

// d_x[t] = sum over j of d_xs[position of slot t*k + j], summed in j order (deterministic).
template <typename T>
void moe_gather_backward(const T* d_xs, const int32_t* order, int64_t n, int64_t k, int64_t d,
                         T* d_x);

// out[t] = sum over j of weights[t, j] * ys[position of slot t*k + j].
template <typename T>
void moe_combine_forward(const T* ys, const T* weights, const int32_t* order, int64_t n, int64_t k,
                         int64_t d, T* out);

// d_ys[p] = weights[s] * d_out[s / k] with s = order[p];  d_weights[s] = <d_out[s / k], ys[p]>.
template <typename T>
void moe_combine_backward(const T* ys, const T* weights, const int32_t* order, const T* d_out,
                          int64_t n, int64_t k, int64_t d, T* d_ys, T* d_weights);

// In place: bias[e] += rate * sign(mean_load - load[e]), with sign(0) = 0 (compared exactly in
// integers as sum(load) - E * load[e]).
template <typename T>
void moe_bias_update(T* bias, const int64_t* load, int64_t num_experts, double rate = 1e-3);

}  // namespace braid::kernels::cpu
