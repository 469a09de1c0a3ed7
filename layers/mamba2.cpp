#include "layers/mamba2.h"

#include <cmath>

#include "layers/basic.h"
#include "layers/ops/decode.h"
#include "layers/ops/conv1d.h"
#include "layers/ops/gated_rmsnorm.h"
#include "layers/ops/layout.h"

namespace braid {

Mamba2::Mamba2(int64_t d_model, const MambaShape& shape, bool standalone, bool shared_x, double norm_eps,
               const TensorOptions& options, double init_std, double output_std)
    : shape_(shape), shared_x_(shared_x), norm_eps_(norm_eps) {
  const int64_t di = shape.d_ssm, gn = shape.n_groups * shape.d_state, heads = shape.n_heads();
  const int64_t in_width = (shared_x ? 1 : 2) * di + 2 * gn + heads;  // z | x | B | C | dt
  in_proj_ = add_module("in_proj", std::make_unique<Linear>(d_model, in_width, options, init_std));
  // PyTorch's Conv1d default bound for a depthwise conv of fan-in W.
  const double conv_bound = 1.0 / std::sqrt(double(shape.conv_width));
  conv_weight_ = add_parameter("conv.weight", {di + 2 * gn, shape.conv_width}, options,
                               Init::uniform(-conv_bound, conv_bound), true);
  conv_bias_ = add_parameter("conv.bias", {di + 2 * gn}, options, Init::uniform(-conv_bound, conv_bound), false);
  dt_bias_ = add_parameter("dt_bias", {heads}, options,
                           {Init::Kind::inverse_softplus_log_uniform, shape.dt_init_min, shape.dt_init_max,
                            shape.dt_init_floor},
                           false);
  A_log_ = add_parameter("A_log", {heads}, options,
                         {Init::Kind::log_uniform, shape.a_init_min, shape.a_init_max}, false);
  D_ = add_parameter("D", {heads}, options, Init::constant(1.0), false);
  if (standalone) {
    norm_weight_ = add_parameter("norm.weight", {di}, options, Init::constant(1.0), false);
    out_proj_ = add_module("out_proj", std::make_unique<Linear>(di, d_model, options, output_std));
  }
}

void Mamba2::check_shared_x(const autograd::Var& shared_x) const {
  BRAID_CHECK((shared_x != nullptr) == shared_x_, "mamba branch built ",
              shared_x_ ? "with" : "without", " a shared x input, called ", shared_x ? "with" : "without", " one");
}

Mamba2::Projected Mamba2::split_projection(const autograd::Var& zxbcdt, const autograd::Var& shared_x) const {
  check_shared_x(shared_x);
  const int64_t di = shape_.d_ssm, gn = shape_.n_groups * shape_.d_state, heads = shape_.n_heads();
  // With a shared x the projection holds only B and C between z and dt.
  const std::vector<autograd::Var> parts = ops::split(zxbcdt, -1, {di, shared_x_ ? 2 * gn : di + 2 * gn, heads});
  Projected out;
  out.z = parts[0];
  out.xbc = shared_x_ ? ops::concat({shared_x, parts[1]}, -1) : parts[1];
  out.dt = parts[2];
  return out;
}

Mamba2::Outputs Mamba2::branch(const autograd::Var& x, const autograd::Var& shared_x) const {
  const int64_t batch = x->value.size(0), time = x->value.size(1);
  const int64_t di = shape_.d_ssm, gn = shape_.n_groups * shape_.d_state, heads = shape_.n_heads();
  Projected in = split_projection(in_proj_->forward(x), shared_x);
  autograd::Var conv = ops::conv1d(in.xbc, conv_weight_, conv_bias_, nullptr).out;
  const std::vector<autograd::Var> xbc = ops::split(conv, -1, {di, gn, gn});
  autograd::Var xs = ops::reshape(xbc[0], {batch, time, heads, shape_.head_dim});
  autograd::Var B = ops::reshape(xbc[1], {batch, time, shape_.n_groups, shape_.d_state});
  autograd::Var C = ops::reshape(xbc[2], {batch, time, shape_.n_groups, shape_.d_state});
  ops::SsdOptions options;
  options.chunk = shape_.chunk;
  autograd::Var y = ops::ssd(xs, in.dt, dt_bias_, A_log_, B, C, D_, nullptr, options).y;
  return {ops::reshape(y, {batch, time, di}), in.z};
}

LayerCache Mamba2::allocate_cache(int64_t batch, int64_t, DType dtype, Device device) const {
  const int64_t channels = shape_.d_ssm + 2 * shape_.n_groups * shape_.d_state;
  // The SSM state is fp32 (KERNELS.md 6.1); the CPU's f64 models keep it in f64.
  const DType state_dtype = dtype == DType::f64 ? DType::f64 : DType::f32;
  LayerCache cache;
  cache.conv = Tensor::zeros({batch, channels, shape_.conv_width - 1}, dtype, device);
  cache.ssm = Tensor::zeros({batch, shape_.n_heads(), shape_.head_dim, shape_.d_state}, state_dtype, device);
  return cache;
}

Mamba2::Outputs Mamba2::branch_cached(const autograd::Var& x, LayerCache& cache, const InferenceStep& step,
                                      const autograd::Var& shared_x) const {
  const int64_t batch = x->value.size(0), time = x->value.size(1);
  const int64_t di = shape_.d_ssm, gn = shape_.n_groups * shape_.d_state, heads = shape_.n_heads();
  const int64_t groups = shape_.n_groups, n = shape_.d_state, p = shape_.head_dim;
  const autograd::Var zxbcdt = project(*in_proj_, x, &step);
  ops::SsdOptions options;
  options.chunk = shape_.chunk;
  if (step.decoding()) {
    check_shared_x(shared_x);
    // One token per sequence: z, x | B | C and dt stay views of the projection (batch, 1, width), which
    // the ops read in place or copy themselves (no split into fresh tensors first).
    const Tensor& projection = zxbcdt->value;
    const int64_t xbc_width = shared_x_ ? 2 * gn : di + 2 * gn;  // the part of x | B | C in_proj makes
    const Tensor xbc_part = projection.narrow(2, di, xbc_width);
    const Tensor xbc = shared_x_ ? ops::concat({shared_x, autograd::leaf(xbc_part)}, -1)->value : xbc_part;
    Tensor conv = ops::conv_state_update(cache.conv, xbc.select(1, 0), conv_weight_->value, conv_bias_->value);
    Tensor y = ops::ssm_state_update(cache.ssm, conv.narrow(1, 0, di),
                                     projection.narrow(2, di + xbc_width, heads).select(1, 0), dt_bias_->value,
                                     A_log_->value, conv.narrow(1, di, gn), conv.narrow(1, di + gn, gn), D_->value,
                                     options);
    return {autograd::leaf(y.reshape({batch, 1, di})), autograd::leaf(projection.narrow(2, 0, di))};
  }
  // Prefill of one sequence: continue from its states unless it starts afresh, then keep the final ones.
  Projected in = split_projection(zxbcdt, shared_x);
  Tensor conv_row = cache.conv.narrow(0, step.row, 1), ssm_row = cache.ssm.narrow(0, step.row, 1);
  const bool fresh = step.start == 0;
  ops::Conv1dOutput conv = ops::conv1d(in.xbc, conv_weight_, conv_bias_, fresh ? nullptr : autograd::leaf(conv_row));
  autograd::Var xs = ops::reshape(ops::narrow(conv.out, -1, 0, di), {batch, time, heads, p});
  autograd::Var B = ops::reshape(ops::narrow(conv.out, -1, di, gn), {batch, time, groups, n});
  autograd::Var C = ops::reshape(ops::narrow(conv.out, -1, di + gn, gn), {batch, time, groups, n});
  ops::SsdOutputs scan = ops::ssd(xs, in.dt, dt_bias_, A_log_, B, C, D_, fresh ? nullptr : autograd::leaf(ssm_row),
                                  options);
  conv_row.copy_from(conv.final_state->value);
  ssm_row.copy_from(scan.final_state->value);
  return {ops::reshape(scan.y, {batch, time, di}), in.z};
}

autograd::Var Mamba2::forward(const autograd::Var& x) const {
  BRAID_CHECK(out_proj_ != nullptr, "mamba branch without norm and out_proj used as a mixer");
  Outputs out = branch(x);
  return out_proj_->forward(ops::gated_rmsnorm(out.y, out.z, norm_weight_, shape_.n_groups, norm_eps_));
}

autograd::Var Mamba2::forward_cached(const autograd::Var& x, LayerCache& cache, const InferenceStep& step) const {
  BRAID_CHECK(out_proj_ != nullptr, "mamba branch without norm and out_proj used as a mixer");
  Outputs out = branch_cached(x, cache, step);
  return project(*out_proj_, ops::gated_rmsnorm(out.y, out.z, norm_weight_, shape_.n_groups, norm_eps_), &step);
}

}  // namespace braid
