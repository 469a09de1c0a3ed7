// gradcheck: analytic gradients against central finite differences, in double precision, on the
// CPU backend.
//
// `function` maps input Variables to one output Variable. gradcheck projects the output on a fixed
// random direction r (loss = <output, r>), backpropagates r, and compares every input element's
// gradient with (loss(x + eps) - loss(x - eps)) / (2 eps). Inputs must be f64 CPU tensors; integer
// inputs (token ids, indices) are passed through and not differentiated.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "autograd/variable.h"

namespace braid::autograd {

struct GradcheckOptions {
  double eps = 1e-6;
  double atol = 1e-7;
  double rtol = 1e-5;
  uint64_t seed = 1234;          // for the projection direction
  std::vector<bool> differentiate;  // per input; empty = every floating input
};

struct GradcheckResult {
  bool ok = true;
  double max_abs_error = 0;
  double max_rel_error = 0;
  int64_t elements_checked = 0;
  std::string report;  // the worst mismatch per input, for the test's failure message
};

using Function = std::function<Var(const std::vector<Var>& inputs)>;

GradcheckResult gradcheck(const Function& function, const std::vector<Tensor>& inputs,
                          const GradcheckOptions& options = {});

// The same check with respect to existing f64 leaves (e.g. every parameter of a model), whose values
// are perturbed in place and restored. `function` must read them on every call.
GradcheckResult gradcheck_leaves(const std::function<Var()>& function, const std::vector<Var>& leaves,
                                 const GradcheckOptions& options = {});

}  // namespace braid::autograd
