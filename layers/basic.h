// The small modules every block is made of: Linear (no bias), Embedding (tied to the LM head) and
// RMSNorm (MODEL.md section 1).
#pragma once

#include "layers/module.h"

namespace braid {

class Linear : public Module {
 public:
  // weight (out_features, in_features) ~ N(0, init_std).
  Linear(int64_t in_features, int64_t out_features, const TensorOptions& options, double init_std);
  autograd::Var forward(const autograd::Var& x) const;  // (..., in) -> (..., out)
  const autograd::Var& weight() const { return weight_; }

 private:
  autograd::Var weight_;
};

class Embedding : public Module {
 public:
  Embedding(int64_t vocab_size, int64_t dim, const TensorOptions& options, double init_std);
  autograd::Var forward(const autograd::Var& ids) const;      // ids (...) -> (..., dim)
  autograd::Var logits(const autograd::Var& hidden) const;    // tied head: (..., dim) -> (..., vocab)
  const autograd::Var& weight() const { return weight_; }

 private:
  autograd::Var weight_;
};

class RMSNorm : public Module {
 public:
  RMSNorm(int64_t dim, double eps, const TensorOptions& options);
  autograd::Var forward(const autograd::Var& x) const;
  const autograd::Var& weight() const { return weight_; }
  double eps() const { return eps_; }

 private:
  autograd::Var weight_;
  double eps_;
};

}  // namespace braid
