// AdamW over a model's parameters (MODEL.md section 8): fp32 moments, decoupled weight decay on the
// parameters marked for it (matrices), global-norm gradient clipping.
//
// All parameters live on one device. On the CPU each parameter is updated by kernels/cpu/adamw.h in
// turn. On CUDA (f32 master weights, moments allocated beside them) the global gradient norm is one
// multi-tensor launch (kernels/cuda/grad_norm.h) read back once, and the update of every parameter
// is one multi-tensor launch (kernels/cuda/adamw.h) that also applies the clip factor.
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
  // The square of grad_norm(), unrounded: data parallelism sums it over the ranks' shards.
  double grad_sum_of_squares() const;
  // Scales every gradient by max_norm / norm when norm > max_norm. On CUDA the scaling is folded
  // into the next step() (the gradient tensors are left as they are; zero_grad() drops it).
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
  // The CUDA paths (defined in CUDA builds only).
  double cuda_grad_sum_of_squares() const;
  void cuda_step(double lr);

  std::vector<Slot> slots_;
  AdamWConfig config_;
  int64_t steps_ = 0;
  Device device_ = Device::cpu();  // of every parameter
  double pending_clip_ = 1.0;      // CUDA: clip factor the next step applies
};

}  // namespace braid
