#include "layers/block.h"

#include <cmath>

#include "layers/attention.h"
#include "layers/ffn.h"
#include "layers/intra_hybrid.h"
#include "layers/mamba2.h"
#include "layers/ops/elementwise.h"
#include "layers/ops/rmsnorm.h"

namespace braid {

namespace {

ops::RopeConfig rope_of(const RopeSettings& settings) {
  ops::RopeConfig rope;
  rope.theta = settings.theta;
  rope.llama3_scaling = settings.llama3_scaling;
  rope.factor = settings.factor;
  rope.low_freq_factor = settings.low_freq_factor;
  rope.high_freq_factor = settings.high_freq_factor;
  rope.original_context = settings.original_context;
  return rope;
}

AttentionShape attention_shape(const ModelConfig& config, bool sliding) {
  const AttentionConfig& attention = config.attention;
  AttentionShape shape;
  shape.n_heads = attention.n_heads;
  shape.n_kv_heads = attention.n_kv_heads;
  shape.qk_head_dim = shape.v_head_dim = attention.head_dim;
  shape.rope = rope_of(attention.rope);
  if (sliding) {
    shape.rope.theta = config.sliding_window.rope_theta;
    shape.rope.llama3_scaling = false;
    shape.mask.window = config.sliding_window.window;
    shape.mask.sink = config.sliding_window.sink;
  }
  return shape;
}

MambaShape mamba_shape(const MambaConfig& mamba) {
  MambaShape shape;
  shape.d_ssm = mamba.d_ssm;
  shape.head_dim = mamba.head_dim;
  shape.d_state = mamba.d_state;
  shape.n_groups = mamba.n_groups;
  shape.conv_width = mamba.conv_width;
  shape.chunk = mamba.chunk;
  shape.a_init_min = mamba.a_init_min;
  shape.a_init_max = mamba.a_init_max;
  shape.dt_init_min = mamba.dt_init_min;
  shape.dt_init_max = mamba.dt_init_max;
  shape.dt_init_floor = mamba.dt_init_floor;
  return shape;
}

std::unique_ptr<Mixer> make_mixer(const ModelConfig& config, char kind, const TensorOptions& options,
                                  double output_std) {
  const int64_t d = config.d_model;
  switch (kind) {
    case 'T':
    case 'W':
      return std::make_unique<Attention>(d, attention_shape(config, kind == 'W'), true, options,
                                         config.init_std, output_std);
    case 'M':
      return std::make_unique<Mamba2>(d, mamba_shape(config.mamba), true, false, config.norm_eps, options,
                                      config.init_std, output_std);
    case 'H': {
      const IntraHybridConfig& intra = config.intra;
      AttentionShape attention;
      attention.n_heads = intra.n_heads;
      attention.n_kv_heads = intra.n_kv_heads;
      attention.qk_head_dim = intra.qk_dim / intra.n_heads;
      attention.v_head_dim = intra.v_dim / intra.n_heads;
      attention.rope = rope_of(config.attention.rope);
      MambaShape mamba = mamba_shape(config.mamba);
      mamba.d_ssm = intra.d_ssm;
      mamba.head_dim = intra.mamba_head_dim;
      mamba.d_state = intra.d_state;
      return std::make_unique<IntraHybrid>(d, intra, attention, mamba, options, config.init_std, output_std);
    }
  }
  BRAID_FAIL("unknown layer kind '", kind, "'");
}

}  // namespace

Block::Block(const ModelConfig& config, char kind, const TensorOptions& options) : kind_(kind) {
  // Output projections are scaled down by depth so the residual stream's variance stays bounded.
  const double output_std = config.init_std / std::sqrt(2.0 * double(config.n_layers()));
  mixer_norm_ = add_module("mixer_norm", std::make_unique<RMSNorm>(config.d_model, config.norm_eps, options));
  mixer_ = add_module("mixer", make_mixer(config, kind, options, output_std));
  ffn_norm_ = add_module("ffn_norm", std::make_unique<RMSNorm>(config.d_model, config.norm_eps, options));
  if (config.ffn.kind == FfnConfig::Kind::moe) {
    moe_ = add_module("ffn", std::make_unique<MoE>(config.d_model, config.ffn, options, config.init_std, output_std));
    ffn_ = moe_;
  } else {
    ffn_ = add_module("ffn", std::make_unique<SwiGLU>(config.d_model, config.ffn.d_ffn, options,
                                                      config.init_std, output_std));
  }
}

autograd::Var Block::forward(const autograd::Var& x) const {
  autograd::Var mixed = mixer_->forward(mixer_norm_->forward(x));
  ops::AddRmsnormResult h = ops::add_rmsnorm(mixed, x, ffn_norm_->weight(), ffn_norm_->eps());
  return ops::add(h.sum, ffn_->forward(h.normed));
}

Block::Stream Block::forward_cached(const Stream& x, LayerCache& cache, const InferenceStep& step) const {
  ops::AddRmsnormResult in = normalize_stream(x, *mixer_norm_);
  autograd::Var mixed = mixer_->forward_cached(in.normed, cache, step);
  ops::AddRmsnormResult h = ops::add_rmsnorm(mixed, in.sum, ffn_norm_->weight(), ffn_norm_->eps());
  return {h.sum, ffn_->forward_inference(h.normed, step)};
}

ops::AddRmsnormResult normalize_stream(const Block::Stream& x, const RMSNorm& norm) {
  if (!x.pending) return {x.sum, norm.forward(x.sum)};
  return ops::add_rmsnorm(x.pending, x.sum, norm.weight(), norm.eps());
}

}  // namespace braid
