#pragma once

#include <cstdint>

#include "autograd/variable.h"

namespace braid::ops {

// What the router decided for n tokens, E experts and k experts per token (MODEL.md section 5).
// Slot s = t*k + j is token t's j-th choice. Expert e's rows of the permuted order are
// [offsets[e], offsets[e+1]), so xs.narrow(0, offsets[e], offsets[e+1] - offsets[e]) is its input.
//
// Devices: weights, indices and order live on the logits' device; offsets and load are always host
// (CPU) tensors, because the MoE layer reads them on the host to slice xs per expert and to sum the
// load. On CUDA that costs one device->host copy of E+1 integers per call (load is their
// differences). Weights are in the logits' dtype on the CPU and f32 on CUDA (f32 or bf16 logits).
struct RouteResult {
  autograd::Var weights;  // (n, k) unbiased sigmoid scores, differentiable in the logits
  Tensor indices;         // (n, k) i32 selected experts, best first
  Tensor order;           // (n*k) i32 slot ids, expert-major, tokens increasing within an expert
  Tensor offsets;         // (E+1) i64, on the host
  Tensor load;            // (E) i64 token-slots per expert, for moe_bias_update, on the host
};

// Routes each token of `logits` (n, E) to the k experts with the largest sigmoid(logit) + bias;
// `bias` (E) affects selection only. `normalize` divides the k weights by their sum. On CUDA,
// E <= 64 and k <= 8, and the bias may be on the host or on the logits' device (read as f32).
RouteResult moe_route(const autograd::Var& logits, const Tensor& bias, int64_t k,
                      bool normalize = false);

// x (n, d) -> xs (n*k, d): token rows in the route's expert-major order.
autograd::Var moe_gather(const autograd::Var& x, const RouteResult& route);

// ys (n*k, d) in the route's order, weights (n, k) -> out (n, d):
// out[t] = sum_j weights[t, j] * (the row of ys holding slot t*k + j). On CUDA the weights are f32
// (as moe_route gives them) next to f32 or bf16 ys; on the CPU they share the ys' dtype.
autograd::Var moe_combine(const autograd::Var& ys, const autograd::Var& weights,
                          const RouteResult& route);

// The dense form of a route, for inference decode steps (the MoE layer's decode path): every expert
// runs on every token and its output is weighted by a gate that is zero where the router did not
// select it. Nothing is read on the host, so a CUDA graph can record these. They take and give
// Tensors, outside autograd: no gradient flows through them (the routed ops above are for training).
//
// gates (n, E): moe_route's weights at the experts it selects (the same selection with the bias,
// ties, scores and normalisation) and 0 at every other expert. In the logits' dtype on the CPU, f32
// on CUDA; the same limits and bias placement as moe_route.
Tensor moe_dense_gates(const Tensor& logits, const Tensor& bias, int64_t k, bool normalize = false);

// ys (E*n, d), every expert's output on all n tokens stacked expert-major (expert e's are rows
// e*n .. e*n + n - 1), and gates (n, E) -> out (n, d): out[t] = sum over e of gates[t, e] *
// ys[e*n + t], in expert order over the nonzero gates only. Gates are f32 on CUDA next to f32 or
// bf16 ys, in the ys' dtype on the CPU.
Tensor moe_dense_combine(const Tensor& ys, const Tensor& gates);

// Auxiliary-loss-free balancing, after each step and outside autograd, in place:
// bias[e] += rate * sign(mean(load) - load[e]). A CUDA bias (f32) is updated on its device; its
// load may be on the host or on that device.
void moe_bias_update(const Tensor& bias, const Tensor& load, double rate = 1e-3);

}  // namespace braid::ops
