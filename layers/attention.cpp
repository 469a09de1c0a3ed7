#include "layers/attention.h"

#include "layers/basic.h"
#include "layers/ops/layout.h"

namespace braid {

Attention::Attention(int64_t d_model, const AttentionShape& shape, bool with_output,
                     const TensorOptions& options, double init_std, double output_std)
    : shape_(shape) {
  const int64_t q_width = shape.n_heads * shape.qk_head_dim;
  q_proj_ = add_module("q_proj", std::make_unique<Linear>(d_model, q_width, options, init_std));
  k_proj_ = add_module("k_proj", std::make_unique<Linear>(d_model, shape.n_kv_heads * shape.qk_head_dim,
                                                          options, init_std));
  v_proj_ = add_module("v_proj", std::make_unique<Linear>(d_model, shape.n_kv_heads * shape.v_head_dim,
                                                          options, init_std));
  if (with_output)
    o_proj_ = add_module("o_proj", std::make_unique<Linear>(shape.n_heads * shape.v_head_dim, d_model,
                                                            options, output_std));
}

Attention::Outputs Attention::attend(const autograd::Var& x) const {
  const int64_t batch = x->value.size(0), time = x->value.size(1);
  auto heads_of = [&](const autograd::Var& projected, int64_t heads, int64_t dim) {
    return ops::reshape(projected, {batch, time, heads, dim});
  };
  autograd::Var q = ops::rope(heads_of(q_proj_->forward(x), shape_.n_heads, shape_.qk_head_dim), shape_.rope);
  autograd::Var k = ops::rope(heads_of(k_proj_->forward(x), shape_.n_kv_heads, shape_.qk_head_dim), shape_.rope);
  autograd::Var value = v_proj_->forward(x);
  autograd::Var v = heads_of(value, shape_.n_kv_heads, shape_.v_head_dim);
  autograd::Var heads = ops::attention(q, k, v, shape_.mask);
  return {ops::reshape(heads, {batch, time, shape_.n_heads * shape_.v_head_dim}), value};
}

autograd::Var Attention::forward(const autograd::Var& x) const {
  BRAID_CHECK(o_proj_ != nullptr, "attention branch without an output projection used as a mixer");
  return o_proj_->forward(attend(x).heads);
}

}  // namespace braid
