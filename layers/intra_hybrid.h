// The intra-layer hybrid mixer (MODEL.md section 4): a reduced attention branch and a reduced Mamba-2
// branch read the same normed input; their outputs are normed per head, optionally scaled, and
// fused (subtract / add / concat) through separate or joint output projections.
#pragma once

#include "layers/attention.h"
#include "layers/mamba2.h"
#include "layers/model_config.h"

namespace braid {

class IntraHybrid : public Mixer {
 public:
  IntraHybrid(int64_t d_model, const IntraHybridConfig& intra, const AttentionShape& attention_shape,
              const MambaShape& mamba_shape, const TensorOptions& options, double init_std,
              double output_std);
  autograd::Var forward(const autograd::Var& x) const override;
  autograd::Var forward_cached(const autograd::Var& x, LayerCache& cache,
                               const InferenceStep& step) const override;
  // The attention branch's k and v and the Mamba branch's conv and ssm.
  LayerCache allocate_cache(int64_t batch, int64_t max_length, DType dtype, Device device) const override;

 private:
  // Norms, scaling, fusion and output projections of the two branch outputs (step: null in training).
  autograd::Var fuse(const autograd::Var& x, autograd::Var a, const Mamba2::Outputs& mamba,
                     const InferenceStep* step) const;

  IntraHybridConfig config_;
  int64_t attn_heads_, ssm_heads_;
  Attention* attn_;
  Mamba2* ssm_;
  autograd::Var norm_attn_weight_, norm_attn_bias_, norm_ssm_weight_, norm_ssm_bias_;
  autograd::Var scale_attn_, scale_ssm_;
  Linear* gate_proj_ = nullptr;
  Linear *out_ssm_ = nullptr, *out_attn_ = nullptr, *out_proj_ = nullptr;
};

}  // namespace braid
