// The two roles a block's sub-layers play: a sequence mixer and a feed-forward network. Both map
// (B, T, d) to (B, T, d).
#pragma once

#include "layers/module.h"

namespace braid {

class Mixer : public Module {
 public:
  virtual autograd::Var forward(const autograd::Var& x) const = 0;
};

class FeedForward : public Module {
 public:
  virtual autograd::Var forward(const autograd::Var& x) const = 0;
};

}  // namespace braid
