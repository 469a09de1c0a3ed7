// Recompute scope (activation checkpointing).
//
// `recompute(block, inputs)` runs `block` without recording, keeping only its inputs. During
// backward it re-runs `block` on a fresh tape and backpropagates through it, so the block's
// activations live only for the duration of its own backward. Parameters used inside `block`
// receive their gradients as usual.
#pragma once

#include <functional>
#include <vector>

#include "autograd/tape.h"

namespace braid::autograd {

using Block = std::function<std::vector<Var>(const std::vector<Var>& inputs)>;

std::vector<Var> recompute(const Block& block, const std::vector<Var>& inputs);

}  // namespace braid::autograd
