#include "autograd/tape.h"

#include <unordered_map>
#include <unordered_set>

namespace braid::autograd {

namespace {

struct Tape {
  std::vector<std::shared_ptr<Node>> nodes;
};

// The innermost tape is the one ops record into; TapeScope pushes a fresh one (recompute).
thread_local std::vector<Tape> tape_stack(1);
thread_local bool grad_mode = true;
thread_local LeafReadyHook leaf_ready_hook;
thread_local int backward_depth = 0;

// After which node (index into the nodes about to run, executed from the back) each leaf that
// requires a gradient is final: the first node, in tape order, that consumes it.
std::unordered_map<size_t, std::vector<Var>> leaves_final_after(const std::vector<std::shared_ptr<Node>>& nodes) {
  std::unordered_set<const Variable*> seen;
  std::unordered_map<size_t, std::vector<Var>> final_after;
  for (size_t i = 0; i < nodes.size(); ++i)
    for (const Var& input : nodes[i]->inputs)
      if (input && input->is_leaf && input->requires_grad && seen.insert(input.get()).second)
        final_after[i].push_back(input);
  return final_after;
}

Tape& current_tape() { return tape_stack.back(); }

}  // namespace

bool grad_enabled() { return grad_mode; }

void set_leaf_ready_hook(LeafReadyHook hook) { leaf_ready_hook = std::move(hook); }

NoGradScope::NoGradScope() : previous_(grad_mode) { grad_mode = false; }
NoGradScope::~NoGradScope() { grad_mode = previous_; }

EnableGradScope::EnableGradScope() : previous_(grad_mode) { grad_mode = true; }
EnableGradScope::~EnableGradScope() { grad_mode = previous_; }

TapeScope::TapeScope() { tape_stack.emplace_back(); }
TapeScope::~TapeScope() { tape_stack.pop_back(); }

bool any_requires_grad(const std::vector<Var>& inputs) {
  if (!grad_mode) return false;
  for (const Var& input : inputs)
    if (input && input->requires_grad) return true;
  return false;
}

std::vector<Var> record(std::shared_ptr<Node> node, const std::vector<Var>& inputs,
                        const std::vector<Tensor>& outputs, bool always) {
  const bool tracked = always ? grad_mode : any_requires_grad(inputs);
  std::vector<Var> variables;
  variables.reserve(outputs.size());
  for (const Tensor& output : outputs) {
    auto variable = std::make_shared<Variable>();
    variable->value = output;
    variable->requires_grad = tracked;
    variable->is_leaf = false;
    variables.push_back(variable);
  }
  if (tracked) {
    node->inputs = inputs;
    for (const Var& variable : variables) node->outputs.push_back(variable);
    current_tape().nodes.push_back(std::move(node));
  }
  return variables;
}

Var record(std::shared_ptr<Node> node, const std::vector<Var>& inputs, const Tensor& output) {
  return record(std::move(node), inputs, std::vector<Tensor>{output})[0];
}

void backward(const std::vector<Var>& roots, const std::vector<Tensor>& seeds) {
  BRAID_CHECK(roots.size() == seeds.size(), "backward: ", roots.size(), " roots but ", seeds.size(),
              " seed gradients");
  for (size_t i = 0; i < roots.size(); ++i) {
    BRAID_CHECK(roots[i]->requires_grad, "backward from a value that does not require grad");
    accumulate_grad(*roots[i], seeds[i]);
  }
  // Only the nodes the roots depend on run (and leave the tape); a graph built beside them, e.g.
  // the same op on another device, stays recorded for its own backward. The tape is in execution
  // order, so one reverse sweep finds them.
  std::vector<std::shared_ptr<Node>> recorded = std::move(current_tape().nodes);
  current_tape().nodes.clear();
  std::unordered_set<const Variable*> needed;
  for (const Var& root : roots) needed.insert(root.get());
  std::vector<bool> reached(recorded.size(), false);
  for (size_t i = recorded.size(); i-- > 0;) {
    for (const auto& weak : recorded[i]->outputs) {
      const Var output = weak.lock();
      reached[i] = reached[i] || (output && needed.count(output.get()));
    }
    if (reached[i])
      for (const Var& input : recorded[i]->inputs) needed.insert(input.get());
  }
  std::vector<std::shared_ptr<Node>> nodes;
  for (size_t i = 0; i < recorded.size(); ++i)
    (reached[i] ? nodes : current_tape().nodes).push_back(std::move(recorded[i]));
  // Intermediate variables holding a gradient their producer has not consumed yet. A node keeps its
  // inputs alive only until it has run, so these are held here in between.
  std::unordered_map<Variable*, Var> awaiting;
  NoGradScope no_grad;  // node backwards compute with kernels; nothing they do is recorded
  const bool report_leaves = leaf_ready_hook && backward_depth == 0;
  std::unordered_map<size_t, std::vector<Var>> final_after;
  if (report_leaves) final_after = leaves_final_after(nodes);
  struct Depth {
    Depth() { ++backward_depth; }
    ~Depth() { --backward_depth; }
  } depth;
  for (auto it = nodes.rbegin(); it != nodes.rend(); ++it) {
    Node& node = **it;
    std::vector<Tensor> grad_outputs;
    bool any = false;
    for (const auto& weak : node.outputs) {
      Var output = weak.lock();
      grad_outputs.push_back(output ? output->grad : Tensor());
      any = any || grad_outputs.back().defined();
      if (output) {
        output->grad = Tensor();  // consumed here; intermediate gradients are not kept
        awaiting.erase(output.get());
      }
    }
    if (any) {
      std::vector<Tensor> grad_inputs = node.backward(grad_outputs);
      BRAID_CHECK(grad_inputs.size() == node.inputs.size(), node.name(), " backward returned ",
                  grad_inputs.size(), " gradients for ", node.inputs.size(), " inputs");
      for (size_t i = 0; i < grad_inputs.size(); ++i) {
        const Var& input = node.inputs[i];
        if (!input || !input->requires_grad || !grad_inputs[i].defined()) continue;
        // A fresh gradient is adopted without a copy unless the node returned its storage twice
        // (e.g. add hands the same gradient to both inputs): then each input needs its own.
        bool shared = false;
        for (size_t j = 0; j < grad_inputs.size(); ++j)
          shared = shared || (j != i && grad_inputs[j].defined() && grad_inputs[j].storage() == grad_inputs[i].storage());
        accumulate_grad(*input, grad_inputs[i], /*adopt=*/!shared);
        if (!input->is_leaf) awaiting.emplace(input.get(), input);
      }
    }
    it->reset();  // frees what the node saved as soon as possible
    if (report_leaves) {
      auto ready = final_after.find(size_t(nodes.rend() - it - 1));
      if (ready != final_after.end())
        for (const Var& leaf : ready->second) leaf_ready_hook(*leaf);
    }
  }
}

void backward(const Var& loss) {
  BRAID_CHECK(loss->value.numel() == 1, "backward(loss) needs a one-element loss, got shape ",
              shape_str(loss->value.shape()));
  backward({loss}, {Tensor::full(loss->value.shape(), 1.0, grad_dtype(loss->value.dtype()),
                                 loss->value.device())});
}

size_t tape_size() { return current_tape().nodes.size(); }

void clear_tape() { current_tape().nodes.clear(); }

}  // namespace braid::autograd
