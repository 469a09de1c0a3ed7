#include "layers/ops/group_norm.h"

#include <cmath>

#include "autograd/tape.h"
#include "kernels/cpu/group_norm.h"
#include "layers/ops/checks.h"
#include "layers/ops/dispatch.h"

namespace braid::ops {

namespace {

class GroupNormNode : public autograd::Node {
 public:
  GroupNormNode(Tensor x, Tensor weight, Tensor mean, Tensor rstd, int64_t groups)
      : x_(std::move(x)), weight_(std::move(weight)), mean_(std::move(mean)),
        rstd_(std::move(rstd)), groups_(groups) {}
  const char* name() const override { return "group_norm"; }

  std::vector<Tensor> backward(const std::vector<Tensor>& grad_outputs) override {
    Tensor d_out = grad_outputs[0].to(x_.dtype()).contiguous();
    Tensor d_x = Tensor::empty(x_.shape(), x_.dtype());
    Tensor d_weight = Tensor::empty(weight_.shape(), x_.dtype());
    Tensor d_bias = Tensor::empty(weight_.shape(), x_.dtype());
    const int64_t channels = weight_.numel();
    dispatch_cpu_float("group_norm", x_.dtype(), [&]<typename T>() {
      kernels::cpu::group_norm_backward<T>(x_.data<T>(), weight_.data<T>(), mean_.data<T>(),
                                           rstd_.data<T>(), d_out.data<T>(), d_x.data<T>(),
                                           d_weight.data<T>(), d_bias.data<T>(),
                                           x_.numel() / channels, groups_, channels / groups_);
    });
    return {d_x, d_weight, d_bias};
  }

 private:
  Tensor x_, weight_, mean_, rstd_;
  int64_t groups_;
};

}  // namespace

autograd::Var group_norm(const autograd::Var& x, const autograd::Var& weight,
                         const autograd::Var& bias, int64_t groups, double eps) {
  const char* op = "group_norm";
  BRAID_CHECK(x->value.dim() >= 1, op, ": x must have a channel dimension, got shape ",
              shape_str(x->value.shape()));
  check_floating(op, "x", x->value);
  const int64_t channels = x->value.size(-1);
  BRAID_CHECK(groups >= 1 && channels >= 1 && channels % groups == 0, op, ": ", channels,
              " channels (x has shape ", shape_str(x->value.shape()), ") do not split into ", groups,
              " groups");
  check_shape(op, "weight", weight->value, {channels});
  check_shape(op, "bias", bias->value, {channels});
  check_same_type(op, "x", x->value, "weight", weight->value);
  check_same_type(op, "x", x->value, "bias", bias->value);
  BRAID_CHECK(eps >= 0 && std::isfinite(eps), op, ": eps must be finite and >= 0, got ", eps);
  check_cpu(op, x->value);

  Tensor xc = x->value.contiguous(), w = weight->value.contiguous(), b = bias->value.contiguous();
  const int64_t rows = xc.numel() / channels;
  Tensor out = Tensor::empty(xc.shape(), xc.dtype());
  Tensor mean = Tensor::empty({rows, groups}, xc.dtype());
  Tensor rstd = Tensor::empty({rows, groups}, xc.dtype());
  dispatch_cpu_float(op, xc.dtype(), [&]<typename T>() {
    kernels::cpu::group_norm_forward<T>(xc.data<T>(), w.data<T>(), b.data<T>(), out.data<T>(),
                                        mean.data<T>(), rstd.data<T>(), rows, groups,
                                        channels / groups, eps);
  });
  return autograd::record(std::make_shared<GroupNormNode>(xc, w, mean, rstd, groups),
                          {x, weight, bias}, out);
}

}  // namespace braid::ops
