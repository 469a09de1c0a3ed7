#include "autograd/recompute.h"

namespace braid::autograd {

namespace {

class RecomputeNode : public Node {
 public:
  explicit RecomputeNode(Block block) : block_(std::move(block)) {}
  const char* name() const override { return "recompute"; }

  std::vector<Tensor> backward(const std::vector<Tensor>& grad_outputs) override {
    TapeScope fresh_tape;
    std::vector<Var> replayed_inputs;
    for (const Var& input : inputs) replayed_inputs.push_back(leaf(input->value, input->requires_grad));
    std::vector<Var> outputs;
    {
      EnableGradScope record_again;  // backward runs under NoGradScope
      outputs = block_(replayed_inputs);
    }
    std::vector<Var> roots;
    std::vector<Tensor> seeds;
    for (size_t i = 0; i < outputs.size(); ++i) {
      if (grad_outputs[i].defined() && outputs[i]->requires_grad) {
        roots.push_back(outputs[i]);
        seeds.push_back(grad_outputs[i]);
      }
    }
    if (!roots.empty()) autograd::backward(roots, seeds);
    std::vector<Tensor> grad_inputs;
    for (const Var& input : replayed_inputs) grad_inputs.push_back(input->grad);
    return grad_inputs;
  }

 private:
  Block block_;
};

}  // namespace

std::vector<Var> recompute(const Block& block, const std::vector<Var>& inputs) {
  std::vector<Tensor> values;
  {
    NoGradScope no_grad;
    for (const Var& output : block(inputs)) values.push_back(output->value);
  }
  return record(std::make_shared<RecomputeNode>(block), inputs, values, /*always=*/true);
}

}  // namespace braid::autograd
