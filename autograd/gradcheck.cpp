#include "autograd/gradcheck.h"

#include <cmath>

#include "autograd/tape.h"
#include "runtime/rng.h"

namespace braid::autograd {

namespace {

// <output, direction> in double.
double project(const Tensor& output, const std::vector<double>& direction) {
  std::vector<double> values = output.to_doubles();
  double total = 0;
  for (size_t i = 0; i < values.size(); ++i) total += values[i] * direction[i];
  return total;
}

}  // namespace

GradcheckResult gradcheck_leaves(const std::function<Var()>& function, const std::vector<Var>& leaves,
                                 const GradcheckOptions& options) {
  for (const Var& variable : leaves) {
    BRAID_CHECK(variable->value.device().is_cpu() && variable->value.dtype() == DType::f64 &&
                    variable->value.is_contiguous(),
                "gradcheck: differentiated values must be contiguous f64 CPU tensors, got ",
                variable->value.describe());
    variable->grad = Tensor();
  }

  // Analytic: backpropagate a fixed random direction r, i.e. the gradient of <f(x), r>.
  clear_tape();
  Var output = function();
  Tensor direction = Tensor::empty(output->value.shape(), DType::f64);
  fill_normal(direction, options.seed, 0);
  const std::vector<double> r = direction.to_doubles();
  backward({output}, {direction});

  GradcheckResult result;
  for (size_t i = 0; i < leaves.size(); ++i) {
    const Var& variable = leaves[i];
    const int64_t count = variable->value.numel();
    const std::vector<double> analytic =
        variable->grad.defined() ? variable->grad.to_doubles() : std::vector<double>(size_t(count), 0.0);
    double* values = variable->value.data<double>();
    double worst_excess = -1;
    std::string worst;
    for (int64_t e = 0; e < count; ++e) {
      const double saved = values[e];
      double plus, minus;
      {
        NoGradScope no_grad;
        values[e] = saved + options.eps;
        plus = project(function()->value, r);
        values[e] = saved - options.eps;
        minus = project(function()->value, r);
      }
      values[e] = saved;
      const double numeric = (plus - minus) / (2 * options.eps);
      const double error = std::abs(analytic[size_t(e)] - numeric);
      const double excess = error - (options.atol + options.rtol * std::abs(numeric));
      result.max_abs_error = std::max(result.max_abs_error, error);
      if (std::abs(numeric) > options.atol)
        result.max_rel_error = std::max(result.max_rel_error, error / std::abs(numeric));
      result.elements_checked += 1;
      if (!(excess <= 0)) result.ok = false;
      if (!(excess <= worst_excess)) {
        worst_excess = std::isnan(excess) ? INFINITY : excess;
        const std::string label = variable->name.empty() ? str("input ", i) : variable->name;
        worst = str(label, " element ", e, ": analytic ", analytic[size_t(e)], ", numeric ", numeric, "\n");
      }
    }
    if (worst_excess > 0) result.report += worst;
  }
  clear_tape();
  return result;
}

GradcheckResult gradcheck(const Function& function, const std::vector<Tensor>& inputs,
                          const GradcheckOptions& options) {
  std::vector<bool> differentiate = options.differentiate;
  if (differentiate.empty())
    for (const Tensor& input : inputs) differentiate.push_back(is_floating(input.dtype()));
  BRAID_CHECK(differentiate.size() == inputs.size(), "gradcheck: ", differentiate.size(),
              " differentiate flags for ", inputs.size(), " inputs");
  std::vector<Var> variables, checked;
  for (size_t i = 0; i < inputs.size(); ++i) {
    BRAID_CHECK(inputs[i].device().is_cpu(), "gradcheck runs on the CPU backend");
    BRAID_CHECK(!differentiate[i] || inputs[i].dtype() == DType::f64,
                "gradcheck: differentiated input ", i, " must be f64, got ", dtype_name(inputs[i].dtype()));
    variables.push_back(leaf(inputs[i].clone(), differentiate[i], differentiate[i] ? str("input ", i) : ""));
    if (differentiate[i]) checked.push_back(variables.back());
  }
  return gradcheck_leaves([&] { return function(variables); }, checked, options);
}

}  // namespace braid::autograd
