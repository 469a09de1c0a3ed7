// AdamW over a model's parameters (MODEL.md section 8): fp32 moments, decoupled weight decay on the
// parameters marked for it (matrices), global-norm gradient clipping.
#pragma once

#include <string>
#include <utility>
#include <vector>

#include "layers/module.h"

namespace braid {

struct AdamWConfig {
  double beta1 = 0.9, beta2 = 0.95, eps = 1e-8;
  double weight_decay = 0.1;
};

class AdamW {
 public:
  AdamW(std::vector<Parameter> parameters, const AdamWConfig& config);

  // L2 norm of all gradients together (missing gradients count as zero); NaN or Inf if any is.
  double grad_norm() const;
  // Scales every gradient by max_norm / norm when norm > max_norm.
  void clip(double norm, double max_norm);
  // One update at learning rate `lr`; the step counter starts at 1.
  void step(double lr);
  void zero_grad();

  int64_t steps() const { return steps_; }
  // Moments by name ("m.<parameter>", "v.<parameter>") for checkpoints, and back.
  std::vector<std::pair<std::string, Tensor>> state() const;
  void load_state(const std::vector<std::pair<std::string, Tensor>>& state, int64_t steps);

 private:
  struct Slot {
    Parameter parameter;
    Tensor m, v;
  };
  std::vector<Slot> slots_;
  AdamWConfig config_;
  int64_t steps_ = 0;
};

}  // namespace braid
