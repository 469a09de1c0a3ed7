#include "layers/ops/moe.h"

#include <algorithm>
#include <limits>
#include <vector>

#include "autograd/tape.h"
#include "kernels/cpu/moe.h"
#include "layers/ops/checks.h"
#include "layers/ops/dispatch.h"

#ifdef BRAID_CUDA
#include "kernels/cuda/moe.h"
#include "runtime/cuda_stream.h"
#include "runtime/device_copy.h"
#endif

namespace braid::ops {

namespace {

#ifdef BRAID_CUDA
// Gradients arrive in bf16 or f32 (autograd::grad_dtype); the kernels take them contiguous in f32.
Tensor f32_contiguous(const Tensor& gradient) { return gradient.to(DType::f32).contiguous(); }

// Scratch int32s on `device` (at least one element, so empty inputs still get a valid pointer).
Tensor int_workspace(int64_t count, Device device) {
  return Tensor::empty({std::max<int64_t>(count, 1)}, DType::i32, device);
}
#endif

class MoeRouteNode : public autograd::Node {
 public:
  MoeRouteNode(Tensor logits, Tensor indices, bool normalize)
      : logits_(std::move(logits)), indices_(std::move(indices)), normalize_(normalize) {}
  const char* name() const override { return "moe_route"; }

  std::vector<Tensor> backward(const std::vector<Tensor>& grad_outputs) override {
#ifdef BRAID_CUDA
    if (logits_.device().is_cuda()) {
      cuda_set_device(logits_.device().index);
      Tensor d_weights = f32_contiguous(grad_outputs[0]);
      Tensor d_logits = Tensor::empty(logits_.shape(), DType::f32, logits_.device());
      kernels::cuda::moe_route_backward(logits_.raw_data(), logits_.dtype(),
                                        indices_.data<int32_t>(), d_weights.data<float>(),
                                        logits_.size(0), logits_.size(1), indices_.size(1),
                                        normalize_, d_logits.data<float>(), compute_stream());
      return {d_logits};
    }
#endif
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
#ifdef BRAID_CUDA
    if (order_.device().is_cuda()) {
      const Device device = order_.device();
      cuda_set_device(device.index);
      Tensor d_xs = f32_contiguous(grad_outputs[0]);
      Tensor d_x = Tensor::empty(x_shape_, DType::f32, device);
      Tensor positions =
          int_workspace(kernels::cuda::moe_positions_workspace_ints(x_shape_[0], k_), device);
      kernels::cuda::moe_gather_backward(d_xs.data<float>(), order_.data<int32_t>(), x_shape_[0],
                                         k_, x_shape_[1], d_x.data<float>(),
                                         positions.data<int32_t>(), compute_stream());
      return {d_x};
    }
#endif
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
#ifdef BRAID_CUDA
    if (ys_.device().is_cuda()) {
      const Device device = ys_.device();
      cuda_set_device(device.index);
      Tensor d_out = f32_contiguous(grad_outputs[0]);
      Tensor d_ys = Tensor::empty(ys_.shape(), DType::f32, device);
      Tensor d_weights = Tensor::empty(weights_.shape(), DType::f32, device);
      kernels::cuda::moe_combine_backward(ys_.raw_data(), ys_.dtype(), weights_.data<float>(),
                                          order_.data<int32_t>(), d_out.data<float>(),
                                          weights_.size(0), weights_.size(1), ys_.size(1),
                                          d_ys.data<float>(), d_weights.data<float>(),
                                          compute_stream());
      return {d_ys, d_weights};
    }
#endif
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

// What moe_route and moe_dense_gates require of their inputs: logits (n, E), a floating bias (E),
// 1 <= k <= E, and slot ids t*k + j that fit int32.
void check_router_inputs(const char* op, const Tensor& logits, const Tensor& bias, int64_t k) {
  check_dim(op, "logits", logits, 2);
  check_floating(op, "logits", logits);
  check_backend(op, "logits", logits);
  const int64_t n = logits.size(0), num_experts = logits.size(1);
  BRAID_CHECK(bias.defined() && bias.shape() == Shape{num_experts}, op, ": bias has shape ",
              bias.defined() ? shape_str(bias.shape()) : "undefined", " but logits ",
              shape_str(logits.shape()), " has ", num_experts, " experts");
  check_floating(op, "bias", bias);
  BRAID_CHECK(k >= 1 && k <= num_experts, op, ": k = ", k, " must be in [1, E] with E = ",
              num_experts, " experts (logits ", shape_str(logits.shape()), ")");
  BRAID_CHECK(n * k <= std::numeric_limits<int32_t>::max(), op, ": ", n, " tokens x k = ", k,
              " slots do not fit the int32 slot ids");
}

// The parts of a RouteResult that gather and combine read: indices (n, k) i32 and an order that is
// a permutation of the n*k slots (anything else would index out of bounds), on the device of the
// activation `x` the op reads. A CPU order is verified to be a permutation; a CUDA order is taken
// on trust (checking it would copy n*k ids to the host on every call): it must come from moe_route.
void check_route(const char* op, const RouteResult& route, const Tensor& x) {
  check_dim(op, "route indices", route.indices, 2);
  check_dtype(op, "route indices", route.indices, DType::i32);
  const int64_t slots = route.indices.numel();
  check_shape(op, "route order", route.order, {slots});
  check_dtype(op, "route order", route.order, DType::i32);
#ifdef BRAID_CUDA
  if (x.device().is_cuda() || route.order.device().is_cuda()) {
    BRAID_CHECK(route.order.device() == x.device(), op, ": the route's order is on ",
                route.order.device().to_string(), " but the input is ", x.describe());
    return;
  }
#else
  (void)x;
#endif
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

#ifdef BRAID_CUDA
namespace {

// The CUDA router's limits, and its bias as the kernels read it: f32 (next to f32 scores, whatever
// the logits' dtype) on the logits' device. A host bias costs a host->device copy per call.
Tensor cuda_router_bias(const char* op, const Tensor& logits, const Tensor& bias, int64_t k) {
  BRAID_CHECK(logits.size(1) <= kernels::cuda::kMoeMaxExperts && k <= kernels::cuda::kMoeMaxTopK,
              op, ": the CUDA router takes at most ", kernels::cuda::kMoeMaxExperts,
              " experts and k <= ", kernels::cuda::kMoeMaxTopK, ", got logits ",
              shape_str(logits.shape()), " and k = ", k);
  BRAID_CHECK(bias.device().is_cpu() || bias.device() == logits.device(), op, ": bias ",
              bias.describe(), " must be on the host or on the logits' device (logits ",
              logits.describe(), ")");
  return bias.to(DType::f32).to(logits.device()).contiguous();
}

// moe_route on a CUDA device: selection and permutation on the device; the expert boundaries come
// back to the host (see moe.h), which costs one device->host copy of E+1 integers per call.
RouteResult cuda_route(const autograd::Var& logits, const Tensor& bias, int64_t k, bool normalize) {
  const Tensor& value = logits->value;
  const Device device = value.device();
  const int64_t n = value.size(0), num_experts = value.size(1);
  cuda_set_device(device.index);
  Tensor l = value.contiguous(), b = cuda_router_bias("moe_route", value, bias, k);
  RouteResult route;
  route.indices = Tensor::empty({n, k}, DType::i32, device);
  route.order = Tensor::empty({n * k}, DType::i32, device);
  Tensor weights = Tensor::empty({n, k}, DType::f32, device);
  Tensor offsets = Tensor::empty({num_experts + 1}, DType::i64, device);
  Tensor workspace =
      int_workspace(kernels::cuda::moe_permute_workspace_ints(n * k, num_experts), device);
  kernels::cuda::moe_route_forward(l.raw_data(), l.dtype(), b.data<float>(), n, num_experts, k,
                                   normalize, route.indices.data<int32_t>(),
                                   weights.data<float>(), compute_stream());
  kernels::cuda::moe_permute(route.indices.data<int32_t>(), n, k, num_experts,
                             route.order.data<int32_t>(), offsets.data<int64_t>(),
                             workspace.data<int32_t>(), compute_stream());
  // The one device->host copy (synchronous): the MoE layer narrows xs per expert on the host.
  route.offsets = offsets.to(Device::cpu());
  route.load = Tensor::empty({num_experts}, DType::i64);
  const int64_t* bounds = route.offsets.data<int64_t>();
  int64_t* load = route.load.data<int64_t>();
  for (int64_t e = 0; e < num_experts; ++e) load[e] = bounds[e + 1] - bounds[e];
  route.weights = autograd::record(std::make_shared<MoeRouteNode>(l, route.indices, normalize),
                                   {logits}, weights);
  return route;
}

}  // namespace
#endif

RouteResult moe_route(const autograd::Var& logits, const Tensor& bias, int64_t k, bool normalize) {
  const Tensor& value = logits->value;
  check_router_inputs("moe_route", value, bias, k);
  const int64_t n = value.size(0), num_experts = value.size(1);
#ifdef BRAID_CUDA
  if (value.device().is_cuda()) return cuda_route(logits, bias, k, normalize);
#endif
  check_cpu("moe_route", bias);

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
  const Tensor& value = x->value;
  check_route("moe_gather", route, value);
  check_dim("moe_gather", "x", value, 2);
  check_backend("moe_gather", "x", value);
  BRAID_CHECK(value.size(0) == route.indices.size(0), "moe_gather: x has shape ",
              shape_str(value.shape()), " but the route's indices have shape ",
              shape_str(route.indices.shape()), " (token counts differ)");
  const int64_t n = value.size(0), k = route.indices.size(1), d = value.size(1);
  Tensor xc = value.contiguous(), order = route.order.contiguous();
  Tensor xs = Tensor::empty({n * k, d}, value.dtype(), value.device());
#ifdef BRAID_CUDA
  if (value.device().is_cuda()) {
    cuda_set_device(value.device().index);
    kernels::cuda::moe_gather_forward(xc.raw_data(), xc.dtype(), order.data<int32_t>(), n, k, d,
                                      xs.raw_data(), compute_stream());
    return autograd::record(std::make_shared<MoeGatherNode>(order, value.shape(), value.dtype(), k),
                            {x}, xs);
  }
#endif
  dispatch_cpu_float("moe_gather", value.dtype(), [&]<typename T>() {
    kernels::cpu::moe_gather_forward<T>(xc.data<T>(), order.data<int32_t>(), n, k, d, xs.data<T>());
  });
  return autograd::record(std::make_shared<MoeGatherNode>(order, value.shape(), value.dtype(), k),
                          {x}, xs);
}

autograd::Var moe_combine(const autograd::Var& ys, const autograd::Var& weights,
                          const RouteResult& route) {
  const Tensor &y = ys->value, &w = weights->value;
  check_route("moe_combine", route, y);
  check_dim("moe_combine", "ys", y, 2);
  check_same_shape("moe_combine", "weights", w, "route indices", route.indices);
  BRAID_CHECK(y.size(0) == route.indices.numel(), "moe_combine: ys has shape ",
              shape_str(y.shape()), " but the route's indices ", shape_str(route.indices.shape()),
              " give ", route.indices.numel(), " token-slots");
  check_backend("moe_combine", "ys", y);
  // On CUDA the weights are f32 (moe_route's output) next to f32 or bf16 ys; on the CPU they share
  // the ys' dtype.
  if (y.device().is_cuda()) check_param("moe_combine", "weights", w, y);
  else check_same_type("moe_combine", "ys", y, "weights", w);
  const int64_t n = w.size(0), k = w.size(1), d = y.size(1);
  Tensor yc = y.contiguous(), wc = w.contiguous(), order = route.order.contiguous();
  Tensor out = Tensor::empty({n, d}, y.dtype(), y.device());
#ifdef BRAID_CUDA
  if (y.device().is_cuda()) {
    cuda_set_device(y.device().index);
    Tensor positions =
        int_workspace(kernels::cuda::moe_positions_workspace_ints(n, k), y.device());
    kernels::cuda::moe_combine_forward(yc.raw_data(), yc.dtype(), wc.data<float>(),
                                       order.data<int32_t>(), n, k, d, out.raw_data(),
                                       positions.data<int32_t>(), compute_stream());
    return autograd::record(std::make_shared<MoeCombineNode>(yc, wc, order), {ys, weights}, out);
  }
#endif
  dispatch_cpu_float("moe_combine", y.dtype(), [&]<typename T>() {
    kernels::cpu::moe_combine_forward<T>(yc.data<T>(), wc.data<T>(), order.data<int32_t>(), n, k, d,
                                         out.data<T>());
  });
  return autograd::record(std::make_shared<MoeCombineNode>(yc, wc, order), {ys, weights}, out);
}

Tensor moe_dense_gates(const Tensor& logits, const Tensor& bias, int64_t k, bool normalize) {
  check_router_inputs("moe_dense_gates", logits, bias, k);
  const int64_t n = logits.size(0), num_experts = logits.size(1);
#ifdef BRAID_CUDA
  if (logits.device().is_cuda()) {
    cuda_set_device(logits.device().index);
    Tensor l = logits.contiguous(), b = cuda_router_bias("moe_dense_gates", logits, bias, k);
    Tensor gates = Tensor::empty({n, num_experts}, DType::f32, logits.device());
    kernels::cuda::moe_dense_gates(l.raw_data(), l.dtype(), b.data<float>(), n, num_experts, k,
                                   normalize, gates.data<float>(), compute_stream());
    return gates;
  }
#endif
  check_cpu("moe_dense_gates", bias);
  // As moe_route: the bias is compared with the scores in the logits' precision.
  Tensor l = logits.contiguous(), b = bias.to(logits.dtype()).contiguous();
  Tensor gates = Tensor::empty({n, num_experts}, logits.dtype());
  dispatch_cpu_float("moe_dense_gates", logits.dtype(), [&]<typename T>() {
    kernels::cpu::moe_dense_gates<T>(l.data<T>(), b.data<T>(), n, num_experts, k, normalize,
                                     gates.data<T>());
  });
  return gates;
}

Tensor moe_dense_combine(const Tensor& ys, const Tensor& gates) {
  check_dim("moe_dense_combine", "ys", ys, 2);
  check_dim("moe_dense_combine", "gates", gates, 2);
  check_backend("moe_dense_combine", "ys", ys);
  const int64_t n = gates.size(0), num_experts = gates.size(1), d = ys.size(1);
  BRAID_CHECK(ys.size(0) == n * num_experts, "moe_dense_combine: ys has shape ",
              shape_str(ys.shape()), " but gates ", shape_str(gates.shape()), " need ",
              n * num_experts, " rows (every expert's output on every token)");
  // As moe_combine: f32 gates next to f32 or bf16 ys on CUDA; the ys' dtype on the CPU.
  if (ys.device().is_cuda()) check_param("moe_dense_combine", "gates", gates, ys);
  else check_same_type("moe_dense_combine", "ys", ys, "gates", gates);
  Tensor yc = ys.contiguous(), gc = gates.contiguous();
  Tensor out = Tensor::empty({n, d}, ys.dtype(), ys.device());
#ifdef BRAID_CUDA
  if (ys.device().is_cuda()) {
    cuda_set_device(ys.device().index);
    kernels::cuda::moe_dense_combine(yc.raw_data(), yc.dtype(), gc.data<float>(), n, num_experts,
                                     d, out.raw_data(), compute_stream());
    return out;
  }
#endif
  dispatch_cpu_float("moe_dense_combine", ys.dtype(), [&]<typename T>() {
    kernels::cpu::moe_dense_combine<T>(yc.data<T>(), gc.data<T>(), n, num_experts, d,
                                       out.data<T>());
  });
  return out;
}

void moe_bias_update(const Tensor& bias, const Tensor& load, double rate) {
  check_dim("moe_bias_update", "bias", bias, 1);
  check_same_shape("moe_bias_update", "bias", bias, "load", load);
  check_dtype("moe_bias_update", "load", load, DType::i64);
  BRAID_CHECK(bias.is_contiguous(), "moe_bias_update: bias ", bias.describe(),
              " must be contiguous (it is updated in place)");
#ifdef BRAID_CUDA
  if (bias.device().is_cuda()) {
    // The load may still be on the host (the MoE layer sums it there) or on the bias' device.
    check_dtype("moe_bias_update", "bias", bias, DType::f32);
    BRAID_CHECK(load.device().is_cpu() || load.device() == bias.device(), "moe_bias_update: load ",
                load.describe(), " must be on the host or on the bias' device (bias ",
                bias.describe(), ")");
    cuda_set_device(bias.device().index);
    Tensor counts = load.to(bias.device()).contiguous();
    kernels::cuda::moe_bias_update(bias.data<float>(), counts.data<int64_t>(), bias.numel(), rate,
                                   compute_stream());
    return;
  }
#endif
  check_cpu("moe_bias_update", bias);
  check_cpu("moe_bias_update", load);
  Tensor counts = load.contiguous();
  dispatch_cpu_float("moe_bias_update", bias.dtype(), [&]<typename T>() {
    kernels::cpu::moe_bias_update<T>(bias.data<T>(), counts.data<int64_t>(), bias.numel(), rate);
  });
}

}  // namespace braid::ops
