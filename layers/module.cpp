#include "layers/module.h"

#include <cmath>

namespace braid {

std::vector<Parameter> Module::named_parameters(const std::string& prefix) const {
  std::vector<Parameter> all;
  for (const Parameter& parameter : parameters_) {
    Parameter named = parameter;
    named.name = prefix + parameter.name;
    all.push_back(named);
  }
  for (const auto& [name, child] : children_)
    for (Parameter& parameter : child->named_parameters(prefix + name + "."))
      all.push_back(std::move(parameter));
  return all;
}

std::vector<autograd::Var> Module::parameters() const {
  std::vector<autograd::Var> variables;
  for (const Parameter& parameter : named_parameters()) variables.push_back(parameter.variable);
  return variables;
}

int64_t Module::parameter_count() const {
  int64_t count = 0;
  for (const Parameter& parameter : named_parameters()) count += parameter.variable->value.numel();
  return count;
}

autograd::Var Module::add_parameter(const std::string& name, const Shape& shape,
                                    const TensorOptions& options, Init init, bool weight_decay) {
  autograd::Var variable = autograd::leaf(Tensor::empty(shape, options.dtype, options.device), true);
  parameters_.push_back({name, variable, init, weight_decay});
  return variable;
}

namespace {

double inverse_softplus(double y) { return y + std::log(-std::expm1(-y)); }

void fill(Tensor& host, const Init& init, Generator& generator) {
  switch (init.kind) {
    case Init::Kind::normal: generator.normal(host, init.a, init.b); return;
    case Init::Kind::uniform: generator.uniform(host, init.a, init.b); return;
    case Init::Kind::constant: host.fill_(init.a); return;
    case Init::Kind::log_uniform: {
      generator.uniform(host, init.a, init.b);
      double* values = host.data<double>();
      for (int64_t i = 0; i < host.numel(); ++i) values[i] = std::log(values[i]);
      return;
    }
    case Init::Kind::inverse_softplus_log_uniform: {
      generator.uniform(host, std::log(init.a), std::log(init.b));
      double* values = host.data<double>();
      for (int64_t i = 0; i < host.numel(); ++i)
        values[i] = inverse_softplus(std::max(std::exp(values[i]), init.floor));
      return;
    }
  }
}

}  // namespace

void Module::initialize(Generator& generator) {
  for (Parameter& parameter : named_parameters()) {
    Tensor& value = parameter.variable->value;
    Tensor host = Tensor::empty(value.shape(), DType::f64);
    fill(host, parameter.init, generator);
    value.copy_from(host);
  }
}

void Module::zero_grad() {
  for (const autograd::Var& variable : parameters()) variable->grad = Tensor();
}

}  // namespace braid
