#include "layers/ops/rmsnorm.h"

#include "autograd/tape.h"
#include "kernels/cpu/rmsnorm.h"
#include "layers/ops/checks.h"
#include "layers/ops/dispatch.h"

namespace braid::ops {

namespace {

// Saves the input of the normalization (x, or the sum in the fused form), the weight and rstd.
// Inputs are (x, weight) for rmsnorm and (x, residual, weight) for add_rmsnorm, whose outputs are
// (sum, normed): the gradient of sum joins d_x, and x and residual share it.
class RmsnormNode : public autograd::Node {
 public:
  RmsnormNode(Tensor normalized_input, Tensor weight, Tensor rstd, bool fused_add)
      : input_(std::move(normalized_input)),
        weight_(std::move(weight)),
        rstd_(std::move(rstd)),
        fused_add_(fused_add) {}
  const char* name() const override { return fused_add_ ? "add_rmsnorm" : "rmsnorm"; }

  std::vector<Tensor> backward(const std::vector<Tensor>& grad_outputs) override {
    const DType dtype = input_.dtype();
    const Tensor& d_normed_in = grad_outputs[fused_add_ ? 1 : 0];
    Tensor d_normed = d_normed_in.defined() ? d_normed_in.to(dtype).contiguous()
                                            : Tensor::zeros(input_.shape(), dtype);
    Tensor d_sum;
    if (fused_add_ && grad_outputs[0].defined()) d_sum = grad_outputs[0].to(dtype).contiguous();
    Tensor d_input = Tensor::empty(input_.shape(), dtype),
           d_weight = Tensor::empty(weight_.shape(), dtype);
    const int64_t dim = weight_.numel(), rows = input_.numel() / dim;
    dispatch_cpu_float(name(), dtype, [&]<typename T>() {
      kernels::cpu::rmsnorm_backward<T>(input_.data<T>(), weight_.data<T>(), rstd_.data<T>(),
                                        d_normed.data<T>(),
                                        d_sum.defined() ? d_sum.data<T>() : nullptr,
                                        d_input.data<T>(), d_weight.data<T>(), rows, dim);
    });
    if (fused_add_) return {d_input, d_input, d_weight};
    return {d_input, d_weight};
  }

 private:
  Tensor input_, weight_, rstd_;
  bool fused_add_;
};

void check_rmsnorm_args(const char* op, const Tensor& x, const Tensor& weight, double eps) {
  BRAID_CHECK(x.defined() && weight.defined() && x.dim() >= 1 && weight.dim() == 1 &&
                  weight.size(0) == x.size(-1) && weight.size(0) > 0,
              op, ": x has shape ", shape_str(x.shape()), " but weight has shape ",
              shape_str(weight.shape()),
              ": weight must be one non-empty vector as long as x's last dimension");
  check_same_type(op, "x", x, "weight", weight);
  check_cpu(op, x);
  BRAID_CHECK(eps > 0, op, ": eps must be positive, got ", eps);
}

}  // namespace

autograd::Var rmsnorm(const autograd::Var& x, const autograd::Var& weight, double eps) {
  check_rmsnorm_args("rmsnorm", x->value, weight->value, eps);
  Tensor x_value = x->value.contiguous(), w_value = weight->value.contiguous();
  const int64_t dim = w_value.numel(), rows = x_value.numel() / dim;
  Tensor y = Tensor::empty(x_value.shape(), x_value.dtype()),
         rstd = Tensor::empty({rows}, x_value.dtype());
  dispatch_cpu_float("rmsnorm", x_value.dtype(), [&]<typename T>() {
    kernels::cpu::rmsnorm_forward<T>(x_value.data<T>(), w_value.data<T>(), y.data<T>(),
                                     rstd.data<T>(), rows, dim, T(eps));
  });
  return autograd::record(std::make_shared<RmsnormNode>(x_value, w_value, rstd, false), {x, weight},
                          y);
}

AddRmsnormResult add_rmsnorm(const autograd::Var& x, const autograd::Var& residual,
                             const autograd::Var& weight, double eps) {
  check_same_shape("add_rmsnorm", "x", x->value, "residual", residual->value);
  check_same_type("add_rmsnorm", "x", x->value, "residual", residual->value);
  check_rmsnorm_args("add_rmsnorm", x->value, weight->value, eps);
  Tensor x_value = x->value.contiguous(), r_value = residual->value.contiguous();
  Tensor w_value = weight->value.contiguous();
  const int64_t dim = w_value.numel(), rows = x_value.numel() / dim;
  const DType dtype = x_value.dtype();
  Tensor sum = Tensor::empty(x_value.shape(), dtype), y = Tensor::empty(x_value.shape(), dtype);
  Tensor rstd = Tensor::empty({rows}, dtype);
  dispatch_cpu_float("add_rmsnorm", dtype, [&]<typename T>() {
    kernels::cpu::add_rmsnorm_forward<T>(x_value.data<T>(), r_value.data<T>(), w_value.data<T>(),
                                         sum.data<T>(), y.data<T>(), rstd.data<T>(), rows, dim,
                                         T(eps));
  });
  std::vector<autograd::Var> outputs = autograd::record(
      std::make_shared<RmsnormNode>(sum, w_value, rstd, true), {x, residual, weight}, {sum, y});
  return {outputs[0], outputs[1]};
}

}  // namespace braid::ops
