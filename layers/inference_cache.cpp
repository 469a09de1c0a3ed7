#include "layers/inference_cache.h"

#include "layers/basic.h"
#include "layers/ops/matmul.h"

namespace braid {

void WeightMap::add(const autograd::Var& parameter, const Tensor& converted) {
  BRAID_CHECK(converted.shape() == parameter->value.shape(), "WeightMap: converted weight has shape ",
              shape_str(converted.shape()), " but the parameter has shape ", shape_str(parameter->value.shape()));
  converted_[parameter.get()] = autograd::leaf(converted);
}

autograd::Var WeightMap::operator()(const autograd::Var& parameter) const {
  auto found = converted_.find(parameter.get());
  return found == converted_.end() ? parameter : found->second;
}

autograd::Var project(const Linear& linear, const autograd::Var& x, const InferenceStep* step) {
  return step ? ops::linear_of_constant_weight(x, step->weight(linear.weight())) : linear.forward(x);
}

std::vector<autograd::Var> project_all(const std::vector<const Linear*>& linears, const autograd::Var& x,
                                       const InferenceStep& step) {
  std::vector<autograd::Var> weights;
  for (const Linear* linear : linears) weights.push_back(step.weight(linear->weight()));
  return ops::linears_of_constant_weights(x, weights);
}

}  // namespace braid
