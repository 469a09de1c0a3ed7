#include "layers/ops/moe.h"

#include <limits>
#include <vector>

#include "autograd/tape.h"
#include "kernels/cpu/moe.h"
#include "layers/ops/checks.h"
#include "layers/ops/dispatch.h"

namespace braid::ops {

namespace {

class MoeRouteNode : public autograd::Node {
 public:
  MoeRouteNode(Tensor logits, Tensor indices, bool normalize)
      : logits_(std::move(logits)), indices_(std::move(indices)), normalize_(normalize) {}
  const char* name() const override { return "moe_route"; }

  std::vector<Tensor> backward(const std::vector<Tensor>& grad_outputs) override {
    Tensor d_weights = grad_outputs[0].to(logits_.dtype()).contiguous();
    Tensor d_logits = Tensor::empty(logits_.shape(), logits_.dtype());
    dispatch_cpu_float("moe_route", logits_.dtype(), [&]<typename T>() {
      kernels::cpu::moe_route_backward<T>(logits_.data<T>(), indices_.data<int32_t>(),
                                          d_weights.data<T>(), logits_.size(0), logits_.size(1),
                                          indices_.size(1), normalize_, d_logits.data<T>());
    });
    return {d_logits};
  }

 private:
  Tensor logits_, indices_;
  bool normalize_;
};

class MoeGatherNode : public autograd::Node {
 public:
  MoeGatherNode(Tensor order, Shape x_shape, DType dtype, int64_t k)
      : order_(std::move(order)), x_shape_(std::move(x_shape)), dtype_(dtype), k_(k) {}
  const char* name() const override { return "moe_gather"; }

  std::vector<Tensor> backward(const std::vector<Tensor>& grad_outputs) override {
    Tensor d_xs = grad_outputs[0].to(dtype_).contiguous();
    Tensor d_x = Tensor::empty(x_shape_, dtype_);
    dispatch_cpu_float("moe_gather", dtype_, [&]<typename T>() {
      kernels::cpu::moe_gather_backward<T>(d_xs.data<T>(), order_.data<int32_t>(), x_shape_[0], k_,
                                           x_shape_[1], d_x.data<T>());
    });
    return {d_x};
  }

 private:
  Tensor order_;
  Shape x_shape_;
  DType dtype_;
  int64_t k_;
};

class MoeCombineNode : public autograd::Node {
 public:
  MoeCombineNode(Tensor ys, Tensor weights, Tensor order)
      : ys_(std::move(ys)), weights_(std::move(weights)), order_(std::move(order)) {}
  const char* name() const override { return "moe_combine"; }

  std::vector<Tensor> backward(const std::vector<Tensor>& grad_outputs) override {
    Tensor d_out = grad_outputs[0].to(ys_.dtype()).contiguous();
    Tensor d_ys = Tensor::empty(ys_.shape(), ys_.dtype());
    Tensor d_weights = Tensor::empty(weights_.shape(), weights_.dtype());
    dispatch_cpu_float("moe_combine", ys_.dtype(), [&]<typename T>() {
      kernels::cpu::moe_combine_backward<T>(
          ys_.data<T>(), weights_.data<T>(), order_.data<int32_t>(), d_out.data<T>(),
          weights_.size(0), weights_.size(1), ys_.size(1), d_ys.data<T>(), d_weights.data<T>());
    });
    return {d_ys, d_weights};
  }

 private:
  Tensor ys_, weights_, order_;
};

// The parts of a RouteResult that gather and combine read: indices (n, k) i32 and an order that is
// a permutation of the n*k slots (anything else would index out of bounds).
void check_route(const char* op, const RouteResult& route) {
  check_dim(op, "route indices", route.indices, 2);
  check_dtype(op, "route indices", route.indices, DType::i32);
  const int64_t slots = route.indices.numel();
  check_shape(op, "route order", route.order, {slots});
  check_dtype(op, "route order", route.order, DType::i32);
  check_cpu(op, route.order);
  Tensor order = route.order.contiguous();
  const int32_t* ids = order.data<int32_t>();
  std::vector<bool> seen(size_t(slots), false);
  for (int64_t p = 0; p < slots; ++p) {
    BRAID_CHECK(ids[p] >= 0 && ids[p] < slots && !seen[size_t(ids[p])], op,
                ": route order is not a permutation of the ", slots, " token-slots of indices ",
                shape_str(route.indices.shape()), " (entry ", p, " = ", ids[p], ")");
    seen[size_t(ids[p])] = true;
  }
}

}  // namespace

RouteResult moe_route(const autograd::Var& logits, const Tensor& bias, int64_t k, bool normalize) {
  const Tensor& value = logits->value;
  check_dim("moe_route", "logits", value, 2);
  check_floating("moe_route", "logits", value);
  check_cpu("moe_route", value);
  const int64_t n = value.size(0), num_experts = value.size(1);
  BRAID_CHECK(bias.defined() && bias.shape() == Shape{num_experts}, "moe_route: bias has shape ",
              bias.defined() ? shape_str(bias.shape()) : "undefined", " but logits ",
              shape_str(value.shape()), " has ", num_experts, " experts");
  check_floating("moe_route", "bias", bias);
  check_cpu("moe_route", bias);
  BRAID_CHECK(k >= 1 && k <= num_experts, "moe_route: k = ", k,
              " must be in [1, E] with E = ", num_experts, " experts (logits ",
              shape_str(value.shape()), ")");
  BRAID_CHECK(n * k <= std::numeric_limits<int32_t>::max(), "moe_route: ", n, " tokens x k = ", k,
              " slots do not fit the int32 slot ids");

  // The bias (an f32 buffer in training) is compared with the scores in the logits' precision.
  Tensor l = value.contiguous(), b = bias.to(value.dtype());
  RouteResult route;
  route.indices = Tensor::empty({n, k}, DType::i32);
  route.order = Tensor::empty({n * k}, DType::i32);
  route.offsets = Tensor::empty({num_experts + 1}, DType::i64);
  route.load = Tensor::empty({num_experts}, DType::i64);
  Tensor weights = Tensor::empty({n, k}, value.dtype());
  dispatch_cpu_float("moe_route", value.dtype(), [&]<typename T>() {
    kernels::cpu::moe_route_forward<T>(l.data<T>(), b.data<T>(), n, num_experts, k, normalize,
                                       route.indices.data<int32_t>(), weights.data<T>(),
                                       route.load.data<int64_t>());
  });
  kernels::cpu::moe_permute(route.indices.data<int32_t>(), n, k, num_experts,
                            route.order.data<int32_t>(), route.offsets.data<int64_t>());
  route.weights = autograd::record(std::make_shared<MoeRouteNode>(l, route.indices, normalize),
                                   {logits}, weights);
  return route;
}

autograd::Var moe_gather(const autograd::Var& x, const RouteResult& route) {
  check_route("moe_gather", route);
  const Tensor& value = x->value;
  check_dim("moe_gather", "x", value, 2);
  check_cpu("moe_gather", value);
  BRAID_CHECK(value.size(0) == route.indices.size(0), "moe_gather: x has shape ",
              shape_str(value.shape()), " but the route's indices have shape ",
              shape_str(route.indices.shape()), " (token counts differ)");
  const int64_t n = value.size(0), k = route.indices.size(1), d = value.size(1);
  Tensor xc = value.contiguous(), order = route.order.contiguous();
  Tensor xs = Tensor::empty({n * k, d}, value.dtype());
  dispatch_cpu_float("moe_gather", value.dtype(), [&]<typename T>() {
    kernels::cpu::moe_gather_forward<T>(xc.data<T>(), order.data<int32_t>(), n, k, d, xs.data<T>());
  });
  return autograd::record(std::make_shared<MoeGatherNode>(order, value.shape(), value.dtype(), k),
                          {x}, xs);
}

autograd::Var moe_combine(const autograd::Var& ys, const autograd::Var& weights,
                          const RouteResult& route) {
  check_route("moe_combine", route);
  const Tensor &y = ys->value, &w = weights->value;
  check_dim("moe_combine", "ys", y, 2);
  check_same_shape("moe_combine", "weights", w, "route indices", route.indices);
  BRAID_CHECK(y.size(0) == route.indices.numel(), "moe_combine: ys has shape ",
              shape_str(y.shape()), " but the route's indices ", shape_str(route.indices.shape()),
              " give ", route.indices.numel(), " token-slots");
  check_same_type("moe_combine", "ys", y, "weights", w);
  check_cpu("moe_combine", y);
  const int64_t n = w.size(0), k = w.size(1), d = y.size(1);
  Tensor yc = y.contiguous(), wc = w.contiguous(), order = route.order.contiguous();
  Tensor out = Tensor::empty({n, d}, y.dtype());
  dispatch_cpu_float("moe_combine", y.dtype(), [&]<typename T>() {
    kernels::cpu::moe_combine_forward<T>(yc.data<T>(), wc.data<T>(), order.data<int32_t>(), n, k, d,
                                         out.data<T>());
  });
  return autograd::record(std::make_shared<MoeCombineNode>(yc, wc, order), {ys, weights}, out);
}

void moe_bias_update(const Tensor& bias, const Tensor& load, double rate) {
  check_dim("moe_bias_update", "bias", bias, 1);
  check_same_shape("moe_bias_update", "bias", bias, "load", load);
  check_dtype("moe_bias_update", "load", load, DType::i64);
  check_cpu("moe_bias_update", bias);
  check_cpu("moe_bias_update", load);
  BRAID_CHECK(bias.is_contiguous(), "moe_bias_update: bias ", bias.describe(),
              " must be contiguous (it is updated in place)");
  Tensor counts = load.contiguous();
  dispatch_cpu_float("moe_bias_update", bias.dtype(), [&]<typename T>() {
    kernels::cpu::moe_bias_update<T>(bias.data<T>(), counts.data<int64_t>(), bias.numel(), rate);
  });
}

}  // namespace braid::ops
