#include "layers/mamba2.h"

#include <cmath>

#include "layers/basic.h"
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

Mamba2::Outputs Mamba2::branch(const autograd::Var& x, const autograd::Var& shared_x) const {
  BRAID_CHECK((shared_x != nullptr) == shared_x_, "mamba branch built ",
              shared_x_ ? "with" : "without", " a shared x input, called ", shared_x ? "with" : "without", " one");
  const int64_t batch = x->value.size(0), time = x->value.size(1);
  const int64_t di = shape_.d_ssm, gn = shape_.n_groups * shape_.d_state, heads = shape_.n_heads();
  autograd::Var zxbcdt = in_proj_->forward(x);
  // With a shared x the projection holds only B and C between z and dt.
  const std::vector<autograd::Var> parts = ops::split(zxbcdt, -1, {di, shared_x_ ? 2 * gn : di + 2 * gn, heads});
  autograd::Var z = parts[0], dt = parts[2];
  autograd::Var xbc = shared_x_ ? ops::concat({shared_x, parts[1]}, -1) : parts[1];
  autograd::Var conv = ops::conv1d(xbc, conv_weight_, conv_bias_, nullptr).out;
  const std::vector<autograd::Var> xbc_parts = ops::split(conv, -1, {di, gn, gn});
  autograd::Var xs = ops::reshape(xbc_parts[0], {batch, time, heads, shape_.head_dim});
  autograd::Var B = ops::reshape(xbc_parts[1], {batch, time, shape_.n_groups, shape_.d_state});
  autograd::Var C = ops::reshape(xbc_parts[2], {batch, time, shape_.n_groups, shape_.d_state});
  ops::SsdOptions options;
  options.chunk = shape_.chunk;
  autograd::Var y = ops::ssd(xs, dt, dt_bias_, A_log_, B, C, D_, nullptr, options).y;
  return {ops::reshape(y, {batch, time, di}), z};
}

autograd::Var Mamba2::forward(const autograd::Var& x) const {
  BRAID_CHECK(out_proj_ != nullptr, "mamba branch without norm and out_proj used as a mixer");
  Outputs out = branch(x);
  return out_proj_->forward(ops::gated_rmsnorm(out.y, out.z, norm_weight_, shape_.n_groups, norm_eps_));
}

}  // namespace braid
