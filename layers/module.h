// Module: the base of every layer. A module owns named parameters and named child modules; the
// dotted path of a parameter (`layers.4.mixer.ssm.A_log`) is its name in checkpoints.
//
// Each parameter records how it is initialized and whether AdamW decays it (matrices only, MODEL.md
// section 8). `initialize` fills all parameters in registration order from one Philox generator, on
// the host, then copies them to the parameters' device: the same seed gives the same model on any
// backend.
#pragma once

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "autograd/variable.h"
#include "runtime/rng.h"

namespace braid {

// Where and in which dtype a model's parameters live (f64 on the CPU for gradcheck).
struct TensorOptions {
  Device device = Device::cpu();
  DType dtype = DType::f32;
};

struct Init {
  enum class Kind { normal, uniform, constant, log_uniform, inverse_softplus_log_uniform };
  Kind kind = Kind::normal;
  double a = 0, b = 0;   // normal: mean, std; uniform: low, high; constant: value;
                         // log_uniform: ln U(a, b) (A_log); inverse_softplus_log_uniform:
                         // softplus^-1(max(exp(U(ln a, ln b)), floor)) (dt_bias)
  double floor = 0;

  static Init normal(double stddev) { return {Kind::normal, 0, stddev}; }
  static Init uniform(double low, double high) { return {Kind::uniform, low, high}; }
  static Init constant(double value) { return {Kind::constant, value, 0}; }
};

struct Parameter {
  std::string name;  // relative to the module that registered it
  autograd::Var variable;
  Init init;
  bool weight_decay = false;
};

class Module {
 public:
  virtual ~Module() = default;
  Module(const Module&) = delete;
  Module& operator=(const Module&) = delete;

  // Every parameter below this module, full dotted names, registration order.
  std::vector<Parameter> named_parameters(const std::string& prefix = "") const;
  std::vector<autograd::Var> parameters() const;
  int64_t parameter_count() const;
  void initialize(Generator& generator);
  void zero_grad();

 protected:
  Module() = default;
  autograd::Var add_parameter(const std::string& name, const Shape& shape, const TensorOptions& options,
                              Init init, bool weight_decay);
  template <typename M>
  M* add_module(const std::string& name, std::unique_ptr<M> child) {
    M* raw = child.get();
    children_.emplace_back(name, std::move(child));
    return raw;
  }

 private:
  std::vector<Parameter> parameters_;
  std::vector<std::pair<std::string, std::unique_ptr<Module>>> children_;
};

}  // namespace braid
