#include "kernels/cpu/moe.h"

#include <utility>
#include <vector>

#include "kernels/cpu/activations.h"

namespace braid::kernels::cpu {

namespace {

// positions[s] = the row of slot s in the permuted order (the inverse permutation), so that
// per-token loops can read their k rows without write conflicts.
std::vector<int64_t> slot_positions(const int32_t* order, int64_t slots) {
  std::vector<int64_t> positions(static_cast<size_t>(slots));
  for (int64_t p = 0; p < slots; ++p) positions[size_t(order[p])] = p;
  return positions;
}

// The weighted row sum both combines compute: out[t] = sum over j < terms of weight * ys[row], with
// (weight, row) = term(t, j), from zero in j order; a term with row < 0 is left out.
template <typename T, typename Term>
void sum_weighted_rows(const T* ys, int64_t n, int64_t terms, int64_t d, T* out, Term term) {
#pragma omp parallel for schedule(static)
  for (int64_t t = 0; t < n; ++t) {
    T* target = out + t * d;
    for (int64_t c = 0; c < d; ++c) target[c] = T(0);
    for (int64_t j = 0; j < terms; ++j) {
      const auto [weight, row] = term(t, j);
      if (row < 0) continue;
      const T* source = ys + row * d;
      for (int64_t c = 0; c < d; ++c) target[c] += weight * source[c];
    }
  }
}

}  // namespace

template <typename T>
void moe_route_forward(const T* logits, const T* bias, int64_t n, int64_t num_experts, int64_t k,
                       bool normalize, int32_t* indices, T* weights, int64_t* load) {
#pragma omp parallel for schedule(static)
  for (int64_t t = 0; t < n; ++t) {
    const T* row = logits + t * num_experts;
    int32_t* chosen = indices + t * k;
    T* gate = weights + t * k;
    // k passes of an argmax over the experts not yet taken; strict > keeps the lower index on ties.
    for (int64_t j = 0; j < k; ++j) {
      int64_t best = -1;
      T best_key = T(0);
      for (int64_t e = 0; e < num_experts; ++e) {
        bool taken = false;
        for (int64_t i = 0; i < j; ++i) taken = taken || chosen[i] == e;
        if (taken) continue;
        T key = sigmoid(row[e]) + bias[e];
        if (best < 0 || key > best_key) {
          best = e;
          best_key = key;
        }
      }
      chosen[j] = int32_t(best);
      gate[j] = sigmoid(row[best]);
    }
    if (normalize) {
      T sum = T(0);
      for (int64_t j = 0; j < k; ++j) sum += gate[j];
      for (int64_t j = 0; j < k; ++j) gate[j] /= sum;
    }
  }
  for (int64_t e = 0; e < num_experts; ++e) load[e] = 0;
  for (int64_t s = 0; s < n * k; ++s) ++load[indices[s]];
}

template <typename T>
void moe_dense_gates(const T* logits, const T* bias, int64_t n, int64_t num_experts, int64_t k,
                     bool normalize, T* gates) {
  // The router itself decides, so the selection, ties and weights are moe_route's by construction.
  std::vector<int32_t> indices(static_cast<size_t>(n * k));
  std::vector<T> weights(static_cast<size_t>(n * k));
  std::vector<int64_t> load(static_cast<size_t>(num_experts));
  moe_route_forward<T>(logits, bias, n, num_experts, k, normalize, indices.data(), weights.data(),
                       load.data());
  for (int64_t i = 0; i < n * num_experts; ++i) gates[i] = T(0);
  for (int64_t s = 0; s < n * k; ++s)
    gates[(s / k) * num_experts + indices[size_t(s)]] = weights[size_t(s)];
}

template <typename T>
void moe_dense_combine(const T* ys, const T* gates, int64_t n, int64_t num_experts, int64_t d,
                       T* out) {
  sum_weighted_rows(ys, n, num_experts, d, out, [&](int64_t t, int64_t e) {
    const T gate = gates[t * num_experts + e];
    return std::pair{gate, gate == T(0) ? int64_t(-1) : e * n + t};
  });
}

template <typename T>
void moe_route_backward(const T* logits, const int32_t* indices, const T* d_weights, int64_t n,
                        int64_t num_experts, int64_t k, bool normalize, T* d_logits) {
#pragma omp parallel for schedule(static)
  for (int64_t t = 0; t < n; ++t) {
    const T* row = logits + t * num_experts;
    const int32_t* chosen = indices + t * k;
    const T* d_gate = d_weights + t * k;
    T* d_row = d_logits + t * num_experts;
    for (int64_t e = 0; e < num_experts; ++e) d_row[e] = T(0);
    // d_score[j]: the gradient w.r.t. the selected sigmoid score. With w_j = s_j / S:
    // dL/ds_i = (d_w_i - sum_j d_w_j w_j) / S.
    T sum = T(0), weighted = T(0);
    if (normalize) {
      for (int64_t j = 0; j < k; ++j) sum += sigmoid(row[chosen[j]]);
      for (int64_t j = 0; j < k; ++j) weighted += d_gate[j] * sigmoid(row[chosen[j]]) / sum;
    }
    for (int64_t j = 0; j < k; ++j) {
      T score = sigmoid(row[chosen[j]]);
      T d_score = normalize ? (d_gate[j] - weighted) / sum : d_gate[j];
      d_row[chosen[j]] = d_score * score * (T(1) - score);
    }
  }
}

void moe_permute(const int32_t* indices, int64_t n, int64_t k, int64_t num_experts, int32_t* order,
                 int64_t* offsets) {
  for (int64_t e = 0; e <= num_experts; ++e) offsets[e] = 0;
  for (int64_t s = 0; s < n * k; ++s) ++offsets[indices[s] + 1];
  for (int64_t e = 0; e < num_experts; ++e) offsets[e + 1] += offsets[e];
  std::vector<int64_t> cursor(offsets, offsets + num_experts);
  // Slots visited in increasing id = increasing token, so each expert's run is token-sorted.
  for (int64_t s = 0; s < n * k; ++s) order[cursor[size_t(indices[s])]++] = int32_t(s);
}

template <typename T>
void moe_gather_forward(const T* x, const int32_t* order, int64_t n, int64_t k, int64_t d, T* xs) {
#pragma omp parallel for schedule(static)
  for (int64_t p = 0; p < n * k; ++p) {
    const T* source = x + (order[p] / k) * d;
    T* target = xs + p * d;
    for (int64_t c = 0; c < d; ++c) target[c] = source[c];
  }
}

template <typename T>
void moe_gather_backward(const T* d_xs, const int32_t* order, int64_t n, int64_t k, int64_t d,
                         T* d_x) {
  std::vector<int64_t> positions = slot_positions(order, n * k);
#pragma omp parallel for schedule(static)
  for (int64_t t = 0; t < n; ++t) {
    T* target = d_x + t * d;
    for (int64_t c = 0; c < d; ++c) target[c] = T(0);
    for (int64_t j = 0; j < k; ++j) {
      const T* source = d_xs + positions[size_t(t * k + j)] * d;
      for (int64_t c = 0; c < d; ++c) target[c] += source[c];
    }
  }
}

template <typename T>
void moe_combine_forward(const T* ys, const T* weights, const int32_t* order, int64_t n, int64_t k,
                         int64_t d, T* out) {
  std::vector<int64_t> positions = slot_positions(order, n * k);
  sum_weighted_rows(ys, n, k, d, out, [&](int64_t t, int64_t j) {
    return std::pair{weights[t * k + j], positions[size_t(t * k + j)]};
  });
}

template <typename T>
void moe_combine_backward(const T* ys, const T* weights, const int32_t* order, const T* d_out,
                          int64_t n, int64_t k, int64_t d, T* d_ys, T* d_weights) {
#pragma omp parallel for schedule(static)
  for (int64_t p = 0; p < n * k; ++p) {
    const int64_t slot = order[p];
    const T* upstream = d_out + (slot / k) * d;
    const T* value = ys + p * d;
    T* target = d_ys + p * d;
    T dot = T(0);
    for (int64_t c = 0; c < d; ++c) {
      target[c] = weights[slot] * upstream[c];
      dot += upstream[c] * value[c];
    }
    d_weights[slot] = dot;  // each slot appears once in order: no write conflict
  }
}

template <typename T>
void moe_bias_update(T* bias, const int64_t* load, int64_t num_experts, double rate) {
  int64_t total = 0;
  for (int64_t e = 0; e < num_experts; ++e) total += load[e];
  for (int64_t e = 0; e < num_experts; ++e) {
    const int64_t excess = total - num_experts * load[e];  // E * (mean_load - load_e)
    const int sign = (excess > 0) - (excess < 0);
    bias[e] += T(rate * sign);
  }
}

template void moe_route_forward<float>(const float*, const float*, int64_t, int64_t, int64_t, bool,
                                       int32_t*, float*, int64_t*);
template void moe_route_forward<double>(const double*, const double*, int64_t, int64_t, int64_t,
                                        bool, int32_t*, double*, int64_t*);
template void moe_dense_gates<float>(const float*, const float*, int64_t, int64_t, int64_t, bool,
                                     float*);
template void moe_dense_gates<double>(const double*, const double*, int64_t, int64_t, int64_t,
                                      bool, double*);
template void moe_dense_combine<float>(const float*, const float*, int64_t, int64_t, int64_t,
                                       float*);
template void moe_dense_combine<double>(const double*, const double*, int64_t, int64_t, int64_t,
                                        double*);
template void moe_route_backward<float>(const float*, const int32_t*, const float*, int64_t,
                                        int64_t, int64_t, bool, float*);
template void moe_route_backward<double>(const double*, const int32_t*, const double*, int64_t,
                                         int64_t, int64_t, bool, double*);
template void moe_gather_forward<float>(const float*, const int32_t*, int64_t, int64_t, int64_t,
                                        float*);
template void moe_gather_forward<double>(const double*, const int32_t*, int64_t, int64_t, int64_t,
                                         double*);
template void moe_gather_backward<float>(const float*, const int32_t*, int64_t, int64_t, int64_t,
                                         float*);
template void moe_gather_backward<double>(const double*, const int32_t*, int64_t, int64_t, int64_t,
                                          double*);
template void moe_combine_forward<float>(const float*, const float*, const int32_t*, int64_t,
                                         int64_t, int64_t, float*);
template void moe_combine_forward<double>(const double*, const double*, const int32_t*, int64_t,
                                          int64_t, int64_t, double*);
template void moe_combine_backward<float>(const float*, const float*, const int32_t*, const float*,
                                          int64_t, int64_t, int64_t, float*, float*);
template void moe_combine_backward<double>(const double*, const double*, const int32_t*,
                                           const double*, int64_t, int64_t, int64_t, double*,
                                           double*);
template void moe_bias_update<float>(float*, const int64_t*, int64_t, double);
template void moe_bias_update<double>(double*, const int64_t*, int64_t, double);

}  // namespace braid::kernels::cpu
