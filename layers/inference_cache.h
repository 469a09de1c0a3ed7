// What the cached (inference) path of the layers reads and writes (DESIGN.md "Inference"; the
// session in infer/session.h owns the tensors and drives the steps).
//
// A step is either a prefill chunk of one sequence (x (1, T, d), continuing from the `start` tokens
// its caches already hold) or a decode step of the whole batch (x (batch, 1, d), one new token per
// sequence at its own position). Cache layouts, per layer, for `batch` rows of `capacity` slots:
//   k, v   (batch, kv_heads, capacity, head_dim)   T and H layers: slot = position (capacity =
//          max_length); W layers: positions < sink at slot = position, later positions in a ring
//          of `window` slots after them (capacity = min(max_length, sink + window))
//   conv   (batch, channels, W-1)                  the last W-1 conv inputs, activation dtype
//   ssm    (batch, H, P, N)                        fp32 (the CPU's f32)
#pragma once

#include <unordered_map>
#include <vector>

#include "autograd/variable.h"

namespace braid {

class Linear;

struct LayerCache {
  Tensor k, v;     // attention part (T, W, H layers)
  Tensor conv;     // Mamba part (M, H layers)
  Tensor ssm;
};

// Matrices converted once into the activation dtype (bf16 serving of fp32 master weights), so a
// decode step reads each weight once in bf16 and never casts.
class WeightMap {
 public:
  void add(const autograd::Var& parameter, const Tensor& converted);
  // The converted copy, or `parameter` itself when none was added.
  autograd::Var operator()(const autograd::Var& parameter) const;

 private:
  std::unordered_map<const autograd::Variable*, autograd::Var> converted_;
};

struct InferenceStep {
  int64_t row = -1;   // prefill: the sequence (cache row) the chunk belongs to; -1: decode step
  int64_t start = 0;  // prefill: tokens that sequence already holds
  // Decode only, i32 on the device, (batch) and (batch, 1): each new token's position, and per
  // cache kind (full: T and H layers; window: W layers) the slot it is written to and the number of
  // slots its query reads.
  Tensor positions;
  Tensor full_slots, full_lengths;
  Tensor window_slots, window_lengths;
  const WeightMap* weights = nullptr;

  bool decoding() const { return row < 0; }
  autograd::Var weight(const autograd::Var& parameter) const {
    return weights ? (*weights)(parameter) : parameter;
  }
};

// x times the linear layer's weight as the step serves it (the converted copy when there is one).
autograd::Var project(const Linear& linear, const autograd::Var& x, const InferenceStep* step);

// x times each linear layer's served weight, in one launch where the backend has one for it (a
// decode step's products of one input: gate and up, or q, k and v).
std::vector<autograd::Var> project_all(const std::vector<const Linear*>& linears, const autograd::Var& x,
                                       const InferenceStep& step);

// The slot of `position` in a W layer's cache (layout above).
inline int64_t window_slot(int64_t position, int64_t window, int64_t sink) {
  return position < sink ? position : sink + (position - sink) % window;
}

}  // namespace braid
