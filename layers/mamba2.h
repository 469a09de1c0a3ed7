// The Mamba-2 mixer (MODEL.md section 3, KERNELS.md section 1.2), and the Mamba branch of the
// intra-hybrid block (the same computation up to y and z, before the gated norm and out_proj).
#pragma once

#include "layers/mixer.h"
#include "layers/ops/ssd.h"

namespace braid {

class Linear;

struct MambaShape {
  int64_t d_ssm = 0, head_dim = 0, d_state = 0, n_groups = 1, conv_width = 4, chunk = 256;
  double a_init_min = 0.01, a_init_max = 2.0;
  double dt_init_min = 1e-3, dt_init_max = 0.1, dt_init_floor = 1e-4;
  int64_t n_heads() const { return d_ssm / head_dim; }
};

class Mamba2 : public Mixer {
 public:
  // `standalone`: with the gated RMSNorm and out_proj (an M block). `shared_x`: the x input comes from
  // outside (the attention V projection under value sharing), so in_proj does not produce it.
  Mamba2(int64_t d_model, const MambaShape& shape, bool standalone, bool shared_x, double norm_eps,
         const TensorOptions& options, double init_std, double output_std);

  struct Outputs {
    autograd::Var y;  // (B, T, d_ssm): SSD output including the D skip
    autograd::Var z;  // (B, T, d_ssm): the gate
  };
  // `shared_x` (B, T, d_ssm) is required exactly when the module was built with shared_x.
  Outputs branch(const autograd::Var& x, const autograd::Var& shared_x = nullptr) const;
  autograd::Var forward(const autograd::Var& x) const override;  // out_proj(gated_rmsnorm(y, z))

  // branch() over the step's tokens with the conv and SSM states (layers/inference_cache.h): a
  // prefill chunk runs the training conv and scan from the cached states and stores their final
  // states; a decode step runs the one-token state updates.
  Outputs branch_cached(const autograd::Var& x, LayerCache& cache, const InferenceStep& step,
                        const autograd::Var& shared_x = nullptr) const;
  autograd::Var forward_cached(const autograd::Var& x, LayerCache& cache,
                               const InferenceStep& step) const override;
  // conv and ssm only.
  LayerCache allocate_cache(int64_t batch, int64_t max_length, DType dtype, Device device) const override;

 private:
  MambaShape shape_;
  bool shared_x_;
  double norm_eps_;
  Linear* in_proj_;
  struct Projected {
    autograd::Var z, xbc, dt;  // the gate, the conv input (x | B | C), the raw dt
  };
  Projected split_projection(const autograd::Var& zxbcdt, const autograd::Var& shared_x) const;
  void check_shared_x(const autograd::Var& shared_x) const;  // given exactly when built with shared_x

  autograd::Var conv_weight_, conv_bias_, dt_bias_, A_log_, D_, norm_weight_;
  Linear* out_proj_ = nullptr;
};

}  // namespace braid
