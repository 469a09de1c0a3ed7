#include "layers/basic.h"

#include "layers/ops/embedding.h"
#include "layers/ops/matmul.h"
#include "layers/ops/rmsnorm.h"

namespace braid {

Linear::Linear(int64_t in_features, int64_t out_features, const TensorOptions& options, double init_std) {
  weight_ = add_parameter("weight", {out_features, in_features}, options, Init::normal(init_std), true);
}

autograd::Var Linear::forward(const autograd::Var& x) const { return ops::linear(x, weight_); }

Embedding::Embedding(int64_t vocab_size, int64_t dim, const TensorOptions& options, double init_std) {
  weight_ = add_parameter("weight", {vocab_size, dim}, options, Init::normal(init_std), true);
}

autograd::Var Embedding::forward(const autograd::Var& ids) const { return ops::embedding(weight_, ids); }

autograd::Var Embedding::logits(const autograd::Var& hidden) const { return ops::linear(hidden, weight_); }

RMSNorm::RMSNorm(int64_t dim, double eps, const TensorOptions& options) : eps_(eps) {
  weight_ = add_parameter("weight", {dim}, options, Init::constant(1.0), false);
}

autograd::Var RMSNorm::forward(const autograd::Var& x) const { return ops::rmsnorm(x, weight_, eps_); }

}  // namespace braid
