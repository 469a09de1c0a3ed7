// The attention mixer of T and W blocks, and the attention branch of the intra-hybrid block
// (MODEL.md sections 2 and 4): grouped-query attention with RoPE, optional sliding window + sink,
// and a Q/K head dim that may differ from the V head dim.
#pragma once

#include "layers/mixer.h"
#include "layers/ops/attention.h"
#include "layers/ops/rope.h"

namespace braid {

class Linear;
struct InferenceStep;

struct AttentionShape {
  int64_t n_heads = 0, n_kv_heads = 0;
  int64_t qk_head_dim = 0, v_head_dim = 0;
  ops::RopeConfig rope;
  ops::AttentionOptions mask;  // window 0 = plain causal
};

class Attention : public Mixer {
 public:
  // With `with_output` the heads are projected back to d_model by o_proj (T and W blocks); the
  // intra-hybrid block uses the concatenated heads itself.
  Attention(int64_t d_model, const AttentionShape& shape, bool with_output, const TensorOptions& options,
            double init_std, double output_std);

  struct Outputs {
    autograd::Var heads;  // (B, T, n_heads * v_head_dim): softmax(Q Kᵀ) V, heads concatenated
    autograd::Var value;  // (B, T, n_kv_heads * v_head_dim): the V projection (value sharing)
  };
  Outputs attend(const autograd::Var& x) const;
  autograd::Var forward(const autograd::Var& x) const override;  // o_proj(attend(x).heads)

  // attend() over the step's tokens with the K/V cache (layers/inference_cache.h): a prefill chunk
  // from position 0 runs the training attention; a later chunk or a decode step reads the cache.
  Outputs attend_cached(const autograd::Var& x, LayerCache& cache, const InferenceStep& step) const;
  autograd::Var forward_cached(const autograd::Var& x, LayerCache& cache,
                               const InferenceStep& step) const override;
  // k and v only; W layers hold min(max_length, sink + window) slots.
  LayerCache allocate_cache(int64_t batch, int64_t max_length, DType dtype, Device device) const override;

 private:
  AttentionShape shape_;
  Linear *q_proj_, *k_proj_, *v_proj_, *o_proj_ = nullptr;
};

}  // namespace braid
