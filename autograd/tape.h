// The define-by-run tape.
//
// Each differentiable op runs its forward kernel, then calls `record` with a Node that holds what
// its backward needs. `backward(loss)` walks the tape in reverse, calls each node's backward with
// the gradients of its outputs, and accumulates the gradients of its inputs. Leaves keep their
// gradient across calls (so micro-batches accumulate); intermediate gradients are freed as soon
// as their producer has run. Nodes are coarse: one per fused op.
#pragma once

#include <functional>
#include <memory>
#include <vector>

#include "autograd/variable.h"

namespace braid::autograd {

class Node {
 public:
  virtual ~Node() = default;
  virtual const char* name() const = 0;
  // grad_outputs[i] is the gradient of output i (undefined if nothing flowed into it).
  // Returns one tensor per input, in order; undefined where the input needs no gradient.
  virtual std::vector<Tensor> backward(const std::vector<Tensor>& grad_outputs) = 0;

  std::vector<Var> inputs;                      // filled by record()
  std::vector<std::weak_ptr<Variable>> outputs; // filled by record()
};

// Whether ops currently record (false inside a NoGradScope).
bool grad_enabled();

// RAII: nothing is recorded while one is alive (inference, optimizer steps).
class NoGradScope {
 public:
  NoGradScope();
  ~NoGradScope();
  NoGradScope(const NoGradScope&) = delete;
  NoGradScope& operator=(const NoGradScope&) = delete;

 private:
  bool previous_;
};

// RAII: recording on again, e.g. to replay a block's forward inside backward (recompute).
class EnableGradScope {
 public:
  EnableGradScope();
  ~EnableGradScope();
  EnableGradScope(const EnableGradScope&) = delete;
  EnableGradScope& operator=(const EnableGradScope&) = delete;

 private:
  bool previous_;
};

// True when grad is enabled and any input requires a gradient.
bool any_requires_grad(const std::vector<Var>& inputs);

// Wraps `outputs` as Variables. When any input requires grad (and grad is enabled), `node` gets
// the inputs and outputs and is appended to the current tape; otherwise it is dropped.
// `always` records whenever grad is enabled, for nodes whose parameters are not among `inputs`
// (recompute).
std::vector<Var> record(std::shared_ptr<Node> node, const std::vector<Var>& inputs,
                        const std::vector<Tensor>& outputs, bool always = false);
Var record(std::shared_ptr<Node> node, const std::vector<Var>& inputs, const Tensor& output);

// Backpropagates from `loss` (a one-element tensor, seeded with 1) through the nodes of the current
// tape it depends on, and removes those nodes. Nodes it does not depend on stay recorded (another
// graph built beside it); a training step that may leave such nodes calls clear_tape() after.
void backward(const Var& loss);
// Backpropagates from several roots with the given seed gradients (same shapes as the roots).
void backward(const std::vector<Var>& roots, const std::vector<Tensor>& seeds);

// Called by the outermost backward() with each leaf that requires a gradient, as soon as the last
// node of that backward consuming it has run: its gradient is final for this backward (it may be
// undefined if nothing flowed into it). Data parallelism launches gradient all-reduces from it.
// Leaves reached only inside nested backwards (recompute) are not reported. Empty: off (default).
using LeafReadyHook = std::function<void(Variable&)>;
void set_leaf_ready_hook(LeafReadyHook hook);

// Number of nodes on the current tape (for tests and memory reports).
size_t tape_size();
// Drops the current tape without running it (e.g. after a refused step).
void clear_tape();

// RAII: pushes a fresh, empty tape; ops record into it until the scope ends. Used by recompute.
class TapeScope {
 public:
  TapeScope();
  ~TapeScope();
  TapeScope(const TapeScope&) = delete;
  TapeScope& operator=(const TapeScope&) = delete;
};

}  // namespace braid::autograd
