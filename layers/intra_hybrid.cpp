#include "layers/intra_hybrid.h"

#include "layers/basic.h"
#include "layers/ops/elementwise.h"
#include "layers/ops/gating.h"
#include "layers/ops/group_norm.h"
#include "layers/ops/layout.h"
#include "layers/ops/swiglu.h"

namespace braid {

using Config = IntraHybridConfig;

IntraHybrid::IntraHybrid(int64_t d_model, const IntraHybridConfig& intra,
                         const AttentionShape& attention_shape, const MambaShape& mamba_shape,
                         const TensorOptions& options, double init_std, double output_std)
    : config_(intra), attn_heads_(attention_shape.n_heads), ssm_heads_(mamba_shape.n_heads()) {
  const bool shared = intra.value_sharing == Config::ValueSharing::shared;
  const int64_t v_dim = intra.v_dim, di = mamba_shape.d_ssm;
  attn_ = add_module("attn", std::make_unique<Attention>(d_model, attention_shape, false, options, init_std,
                                                         output_std));
  ssm_ = add_module("ssm", std::make_unique<Mamba2>(d_model, mamba_shape, false, shared, 0.0, options,
                                                    init_std, output_std));
  if (intra.norm == Config::Norm::group) {
    norm_attn_weight_ = add_parameter("norm_attn.weight", {v_dim}, options, Init::constant(1.0), false);
    norm_attn_bias_ = add_parameter("norm_attn.bias", {v_dim}, options, Init::constant(0.0), false);
    norm_ssm_weight_ = add_parameter("norm_ssm.weight", {di}, options, Init::constant(1.0), false);
    norm_ssm_bias_ = add_parameter("norm_ssm.bias", {di}, options, Init::constant(0.0), false);
  }
  switch (intra.scaling) {
    case Config::Scaling::none: break;
    case Config::Scaling::vector:
      scale_attn_ = add_parameter("scale_attn", {v_dim}, options, Init::constant(1.0), false);
      scale_ssm_ = add_parameter("scale_ssm", {di}, options, Init::constant(1.0), false);
      break;
    case Config::Scaling::scalar:
      scale_attn_ = add_parameter("scale_attn", {1}, options, Init::constant(1.0), false);
      break;
    case Config::Scaling::gate:
      gate_proj_ = add_module("gate_proj", std::make_unique<Linear>(d_model, v_dim + di, options, init_std));
      break;
  }
  if (intra.output == Config::Output::separate) {
    out_ssm_ = add_module("out_ssm", std::make_unique<Linear>(di, d_model, options, output_std));
    out_attn_ = add_module("out_attn", std::make_unique<Linear>(v_dim, d_model, options, output_std));
  } else {
    const int64_t joint_width = intra.fusion == Config::Fusion::concat ? di + v_dim : di;
    out_proj_ = add_module("out_proj", std::make_unique<Linear>(joint_width, d_model, options, output_std));
  }
}

autograd::Var IntraHybrid::forward(const autograd::Var& x) const {
  Attention::Outputs attention = attn_->attend(x);
  const bool shared = config_.value_sharing == Config::ValueSharing::shared;
  Mamba2::Outputs mamba = ssm_->branch(x, shared ? attention.value : nullptr);
  return fuse(x, attention.heads, mamba, nullptr);
}

autograd::Var IntraHybrid::forward_cached(const autograd::Var& x, LayerCache& cache,
                                          const InferenceStep& step) const {
  Attention::Outputs attention = attn_->attend_cached(x, cache, step);
  const bool shared = config_.value_sharing == Config::ValueSharing::shared;
  Mamba2::Outputs mamba = ssm_->branch_cached(x, cache, step, shared ? attention.value : nullptr);
  return fuse(x, attention.heads, mamba, &step);
}

LayerCache IntraHybrid::allocate_cache(int64_t batch, int64_t max_length, DType dtype, Device device) const {
  LayerCache cache = attn_->allocate_cache(batch, max_length, dtype, device);
  LayerCache mamba = ssm_->allocate_cache(batch, max_length, dtype, device);
  cache.conv = mamba.conv;
  cache.ssm = mamba.ssm;
  return cache;
}

autograd::Var IntraHybrid::fuse(const autograd::Var& x, autograd::Var a, const Mamba2::Outputs& mamba,
                                const InferenceStep* step) const {
  // a: the attention heads (B, T, v_dim)
  autograd::Var m = ops::swiglu(mamba.z, mamba.y);  // y ⊙ SiLU(z), (B, T, d_ssm)

  if (config_.norm == Config::Norm::group) {
    a = ops::group_norm(a, norm_attn_weight_, norm_attn_bias_, attn_heads_);
    m = ops::group_norm(m, norm_ssm_weight_, norm_ssm_bias_, ssm_heads_);
  }
  switch (config_.scaling) {
    case Config::Scaling::none: break;
    case Config::Scaling::vector:
      a = ops::mul_broadcast_last(a, scale_attn_);
      m = ops::mul_broadcast_last(m, scale_ssm_);
      break;
    case Config::Scaling::scalar: a = ops::mul_scalar(a, scale_attn_); break;
    case Config::Scaling::gate: {
      autograd::Var gate = ops::sigmoid(project(*gate_proj_, x, step));
      const std::vector<autograd::Var> gates = ops::split(gate, -1, {a->value.size(-1), m->value.size(-1)});
      a = ops::mul(a, gates[0]);
      m = ops::mul(m, gates[1]);
      break;
    }
  }

  const bool subtract = config_.fusion == Config::Fusion::subtract;
  if (config_.output == Config::Output::separate) {
    autograd::Var om = project(*out_ssm_, m, step), oa = project(*out_attn_, a, step);
    return subtract ? ops::sub(om, oa) : ops::add(om, oa);
  }
  switch (config_.fusion) {
    case Config::Fusion::subtract: return project(*out_proj_, ops::sub(m, a), step);
    case Config::Fusion::add: return project(*out_proj_, ops::add(m, a), step);
    case Config::Fusion::concat: return project(*out_proj_, ops::concat({m, a}, -1), step);
  }
  return nullptr;
}

}  // namespace braid
