#include "train/optimizer.h"

#include <cmath>
#include <map>

#include "kernels/cpu/adamw.h"
#include "kernels/cpu/elementwise.h"

namespace braid {

AdamW::AdamW(std::vector<Parameter> parameters, const AdamWConfig& config) : config_(config) {
  for (Parameter& parameter : parameters) {
    const Tensor& value = parameter.variable->value;
    BRAID_CHECK(value.device().is_cpu(), "AdamW: parameter ", parameter.name, " is on ",
                value.device().to_string(), "; the CUDA optimizer arrives with the CUDA backend");
    Tensor m = Tensor::zeros(value.shape(), value.dtype()), v = Tensor::zeros(value.shape(), value.dtype());
    slots_.push_back({std::move(parameter), m, v});
  }
}

double AdamW::grad_norm() const {
  double total = 0;
  for (const Slot& slot : slots_) {
    const Tensor& grad = slot.parameter.variable->grad;
    if (!grad.defined()) continue;
    if (grad.dtype() == DType::f64) total += kernels::cpu::sum_of_squares(grad.data<double>(), grad.numel());
    else total += kernels::cpu::sum_of_squares(grad.data<float>(), grad.numel());
  }
  return std::sqrt(total);
}

void AdamW::clip(double norm, double max_norm) {
  if (!(norm > max_norm) || max_norm <= 0) return;
  const double factor = max_norm / norm;
  for (Slot& slot : slots_) {
    Tensor& grad = slot.parameter.variable->grad;
    if (!grad.defined()) continue;
    if (grad.dtype() == DType::f64) {
      kernels::cpu::scale(grad.data<double>(), factor, grad.data<double>(), grad.numel());
    } else {
      kernels::cpu::scale(grad.data<float>(), float(factor), grad.data<float>(), grad.numel());
    }
  }
}

void AdamW::step(double lr) {
  steps_ += 1;
  for (Slot& slot : slots_) {
    autograd::Variable& variable = *slot.parameter.variable;
    if (!variable.grad.defined()) continue;  // unused this step (e.g. an MoE expert no token chose)
    const double decay = slot.parameter.weight_decay ? config_.weight_decay : 0.0;
    const int64_t n = variable.value.numel();
    if (variable.value.dtype() == DType::f64) {
      kernels::cpu::adamw_step(variable.value.data<double>(), variable.grad.data<double>(), slot.m.data<double>(),
                               slot.v.data<double>(), n, lr, config_.beta1, config_.beta2, config_.eps, decay, steps_);
    } else {
      kernels::cpu::adamw_step(variable.value.data<float>(), variable.grad.data<float>(), slot.m.data<float>(),
                               slot.v.data<float>(), n, lr, config_.beta1, config_.beta2, config_.eps, decay, steps_);
    }
  }
}

void AdamW::zero_grad() {
  for (Slot& slot : slots_) slot.parameter.variable->grad = Tensor();
}

std::vector<std::pair<std::string, Tensor>> AdamW::state() const {
  std::vector<std::pair<std::string, Tensor>> named;
  for (const Slot& slot : slots_) {
    named.emplace_back("m." + slot.parameter.name, slot.m);
    named.emplace_back("v." + slot.parameter.name, slot.v);
  }
  return named;
}

void AdamW::load_state(const std::vector<std::pair<std::string, Tensor>>& state, int64_t steps) {
  std::map<std::string, Tensor> by_name(state.begin(), state.end());
  for (Slot& slot : slots_) {
    for (auto [prefix, target] : {std::pair{"m.", &slot.m}, std::pair{"v.", &slot.v}}) {
      auto found = by_name.find(prefix + slot.parameter.name);
      BRAID_CHECK(found != by_name.end(), "optimizer state has no ", prefix, slot.parameter.name);
      BRAID_CHECK(found->second.shape() == target->shape(), "optimizer state ", prefix, slot.parameter.name,
                  " has shape ", shape_str(found->second.shape()), ", the parameter has ",
                  shape_str(target->shape()));
      target->copy_from(found->second);
    }
  }
  steps_ = steps;
}

}  // namespace braid
