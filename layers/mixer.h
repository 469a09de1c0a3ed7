// The two roles a block's sub-layers play: a sequence mixer and a feed-forward network. Both map
// (B, T, d) to (B, T, d).
#pragma once

#include "layers/inference_cache.h"
#include "layers/module.h"

namespace braid {

class Mixer : public Module {
 public:
  virtual autograd::Var forward(const autograd::Var& x) const = 0;
  // The cached inference path (layers/inference_cache.h): what forward computes for the step's
  // tokens given everything before them, read from and appended to `cache`. No tape.
  virtual autograd::Var forward_cached(const autograd::Var& x, LayerCache& cache,
                                       const InferenceStep& step) const = 0;
  // Zeroed caches for `batch` sequences of up to `max_length` tokens, activations of `dtype`.
  virtual LayerCache allocate_cache(int64_t batch, int64_t max_length, DType dtype, Device device) const = 0;
};

class FeedForward : public Module {
 public:
  virtual autograd::Var forward(const autograd::Var& x) const = 0;
  // forward with the step's converted weights (layers/inference_cache.h).
  virtual autograd::Var forward_inference(const autograd::Var& x, const InferenceStep& step) const = 0;
};

}  // namespace braid
