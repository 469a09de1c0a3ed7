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
  return step ? ops::linear(x, step->weight(linear.weight())) : linear.forward(x);
}

}  // namespace braid
