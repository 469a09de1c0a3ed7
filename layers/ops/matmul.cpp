#include "layers/ops/matmul.h"

#include "autograd/tape.h"
#include "kernels/cpu/gemm.h"
#include "layers/ops/checks.h"
#include "layers/ops/dispatch.h"
#include "layers/ops/swiglu.h"

#ifdef BRAID_CUDA
#include "kernels/cuda/gemm.h"
#include "kernels/cuda/gemv.h"
#include "runtime/cuda_stream.h"
#include "runtime/device_copy.h"
#endif

namespace braid::ops {

namespace {

using kernels::cpu::gemm;

// Whether backward must produce a gradient for input `index` of `node`.
bool wants_grad(const autograd::Node& node, size_t index) {
  return node.inputs[index] && node.inputs[index]->requires_grad;
}

// Number of rows of `x` seen as a matrix (..., last): the product of its leading sizes.
int64_t leading_rows(const Tensor& x) {
  return shape_numel(Shape(x.shape().begin(), x.shape().end() - 1));
}

#ifdef BRAID_CUDA
// c = op(a) op(b) on a's CUDA device through cuBLASLt, with a and b in their (shared) dtype (f32 or
// bf16) and c in its own dtype, on the compute stream. Sizes and leading dimensions as in
// kernels/cuda/gemm.h.
void cuda_product(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, const Tensor& a,
                  int64_t lda, const Tensor& b, int64_t ldb, const Tensor& c, int64_t ldc) {
  cuda_set_device(a.device().index);
  kernels::cuda::gemm(trans_a, trans_b, M, N, K, 1.0f, a.raw_data(), lda, b.raw_data(), ldb, 0.0f,
                      c.raw_data(), ldc, a.dtype(), c.dtype(), compute_stream());
}
#endif

// C = op(A) op(B) with A stored (M, K), or (K, M) when trans_a; B stored (K, N), or (N, K) when
// trans_b. Backward: d op(A) = dC op(B)ᵀ and d op(B) = op(A)ᵀ dC, stored back in A's and B's
// layouts.
class MatmulNode : public autograd::Node {
 public:
  MatmulNode(Tensor a, Tensor b, bool trans_a, bool trans_b)
      : a_(std::move(a)), b_(std::move(b)), trans_a_(trans_a), trans_b_(trans_b) {}
  const char* name() const override { return "matmul"; }

  std::vector<Tensor> backward(const std::vector<Tensor>& grad_outputs) override {
    const int64_t M = trans_a_ ? a_.size(1) : a_.size(0), K = trans_a_ ? a_.size(0) : a_.size(1);
    const int64_t N = trans_b_ ? b_.size(0) : b_.size(1);
    const int64_t ld_a = a_.size(1), ld_b = b_.size(1);
    Tensor d_c = grad_outputs[0].to(a_.dtype()).contiguous();
    // Gradients in the values' dtype (autograd::grad_dtype); cuBLASLt writes them directly.
    const DType grad_dtype = autograd::grad_dtype(a_.dtype());
    Tensor d_a, d_b;
    if (wants_grad(*this, 0)) d_a = Tensor::empty(a_.shape(), grad_dtype, a_.device());
    if (wants_grad(*this, 1)) d_b = Tensor::empty(b_.shape(), grad_dtype, b_.device());
#ifdef BRAID_CUDA
    if (a_.device().is_cuda()) {
      // The same products as the CPU path below.
      if (d_a.defined()) {
        if (trans_a_) cuda_product(trans_b_, true, K, M, N, b_, ld_b, d_c, N, d_a, M);
        else cuda_product(false, !trans_b_, M, K, N, d_c, N, b_, ld_b, d_a, K);
      }
      if (d_b.defined()) {
        if (trans_b_) cuda_product(true, trans_a_, N, K, M, d_c, N, a_, ld_a, d_b, K);
        else cuda_product(!trans_a_, false, K, N, M, a_, ld_a, d_c, N, d_b, N);
      }
      return {d_a, d_b};
    }
#endif
    dispatch_cpu_float("matmul", a_.dtype(), [&]<typename T>() {
      const T* a = a_.data<T>();
      const T* b = b_.data<T>();
      const T* dc = d_c.data<T>();
      if (d_a.defined()) {
        if (trans_a_)  // d_a (K, M) = op(B) dCᵀ
          gemm<T>(trans_b_, true, K, M, N, T(1), b, ld_b, dc, N, T(0), d_a.data<T>(), M);
        else  // d_a (M, K) = dC op(B)ᵀ
          gemm<T>(false, !trans_b_, M, K, N, T(1), dc, N, b, ld_b, T(0), d_a.data<T>(), K);
      }
      if (d_b.defined()) {
        if (trans_b_)  // d_b (N, K) = dCᵀ op(A)
          gemm<T>(true, trans_a_, N, K, M, T(1), dc, N, a, ld_a, T(0), d_b.data<T>(), K);
        else  // d_b (K, N) = op(A)ᵀ dC
          gemm<T>(!trans_a_, false, K, N, M, T(1), a, ld_a, dc, N, T(0), d_b.data<T>(), N);
      }
    });
    return {d_a, d_b};
  }

 private:
  Tensor a_, b_;
  bool trans_a_, trans_b_;
};

// y (rows, out) = x (rows, in) Wᵀ; dx = dy W, dW = dyᵀ x (summed over every row). `weight_` is the
// weight in x's dtype: under mixed precision the bf16 copy of the fp32 master weight the forward
// multiplied with, so backward reuses it. dx has x's dtype, dW the master weight's (fp32).
class LinearNode : public autograd::Node {
 public:
  LinearNode(Tensor x, Tensor weight, DType master_dtype)
      : x_(std::move(x)), weight_(std::move(weight)), master_dtype_(master_dtype) {}
  const char* name() const override { return "linear"; }

  std::vector<Tensor> backward(const std::vector<Tensor>& grad_outputs) override {
    const int64_t out = weight_.size(0), in = weight_.size(1), rows = leading_rows(x_);
    Tensor d_y = grad_outputs[0].to(x_.dtype()).contiguous();
    Tensor d_x, d_weight;
    if (wants_grad(*this, 0)) d_x = Tensor::empty(x_.shape(), autograd::grad_dtype(x_.dtype()), x_.device());
    if (wants_grad(*this, 1))
      d_weight = Tensor::empty(weight_.shape(), autograd::grad_dtype(master_dtype_), weight_.device());
#ifdef BRAID_CUDA
    if (x_.device().is_cuda()) {
      // The same products as the CPU path below, in x's dtype with fp32 accumulation.
      if (d_x.defined()) cuda_product(false, false, rows, in, out, d_y, out, weight_, in, d_x, in);
      if (d_weight.defined())
        cuda_product(true, false, out, in, rows, d_y, out, x_, in, d_weight, in);
      return {d_x, d_weight};
    }
#endif
    dispatch_cpu_float("linear", x_.dtype(), [&]<typename T>() {
      if (d_x.defined())
        gemm<T>(false, false, rows, in, out, T(1), d_y.data<T>(), out, weight_.data<T>(), in, T(0),
                d_x.data<T>(), in);
      if (d_weight.defined())
        gemm<T>(true, false, out, in, rows, T(1), d_y.data<T>(), out, x_.data<T>(), in, T(0),
                d_weight.data<T>(), in);
    });
    return {d_x, d_weight};
  }

 private:
  Tensor x_, weight_;
  DType master_dtype_;
};

}  // namespace

autograd::Var matmul(const autograd::Var& a, const autograd::Var& b, bool trans_a, bool trans_b) {
  check_dim("matmul", "a", a->value, 2);
  check_dim("matmul", "b", b->value, 2);
  check_same_type("matmul", "a", a->value, "b", b->value);
  check_backend("matmul", "a", a->value);
  Tensor a_value = a->value.contiguous(), b_value = b->value.contiguous();
  const int64_t M = trans_a ? a_value.size(1) : a_value.size(0);
  const int64_t K = trans_a ? a_value.size(0) : a_value.size(1);
  const int64_t K_b = trans_b ? b_value.size(1) : b_value.size(0);
  const int64_t N = trans_b ? b_value.size(0) : b_value.size(1);
  BRAID_CHECK(K == K_b, "matmul: a has shape ", shape_str(a_value.shape()),
              trans_a ? " (transposed)" : "", " but b has shape ", shape_str(b_value.shape()),
              trans_b ? " (transposed)" : "", ": inner sizes ", K, " and ", K_b, " differ");
  Tensor c = Tensor::empty({M, N}, a_value.dtype(), a_value.device());
#ifdef BRAID_CUDA
  if (a_value.device().is_cuda()) {
    cuda_product(trans_a, trans_b, M, N, K, a_value, a_value.size(1), b_value, b_value.size(1), c, N);
    return autograd::record(std::make_shared<MatmulNode>(a_value, b_value, trans_a, trans_b),
                            {a, b}, c);
  }
#endif
  dispatch_cpu_float("matmul", a_value.dtype(), [&]<typename T>() {
    gemm<T>(trans_a, trans_b, M, N, K, T(1), a_value.data<T>(), a_value.size(1), b_value.data<T>(),
            b_value.size(1), T(0), c.data<T>(), N);
  });
  return autograd::record(std::make_shared<MatmulNode>(a_value, b_value, trans_a, trans_b), {a, b},
                          c);
}

namespace {

// x and a linear layer's weight checked, contiguous, the weight in x's dtype.
std::pair<Tensor, Tensor> linear_operands(const autograd::Var& x, const autograd::Var& weight) {
  check_dim("linear", "weight", weight->value, 2);
  BRAID_CHECK(x->value.dim() >= 1, "linear: x must have at least 1 dimension, got shape ",
              shape_str(x->value.shape()), " (weight has shape ", shape_str(weight->value.shape()),
              ")");
  BRAID_CHECK(x->value.size(-1) == weight->value.size(1), "linear: x has shape ",
              shape_str(x->value.shape()), " but weight has shape ",
              shape_str(weight->value.shape()), ": inner sizes ", x->value.size(-1), " and ",
              weight->value.size(1), " differ");
  check_backend("linear", "x", x->value);
  // The weight is an fp32 master weight for bf16 x, or an activation-typed matrix (x's dtype).
  if (weight->value.dtype() == x->value.dtype())
    check_same_type("linear", "x", x->value, "weight", weight->value);
  else
    check_param("linear", "weight", weight->value, x->value);
  return {x->value.contiguous(), weight->value.to(x->value.dtype()).contiguous()};
}

// Whether a product reads the weight's own storage (linear_operands neither converted nor copied it).
bool used_as_stored(const Tensor& w_value, const autograd::Var& weight) {
  return w_value.raw_data() == weight->value.raw_data();
}

// x times each weight (all of x's inner size).
std::vector<autograd::Var> linear_products(const autograd::Var& x, const std::vector<autograd::Var>& weights,
                                           bool weights_are_constant) {
  Tensor x_value;
  std::vector<Tensor> w_values, ys;
  for (const autograd::Var& weight : weights) {
    auto [x_checked, w_value] = linear_operands(x, weight);
    x_value = std::move(x_checked);
    Shape y_shape = x_value.shape();
    y_shape.back() = w_value.size(0);
    ys.push_back(Tensor::empty(y_shape, x_value.dtype(), x_value.device()));
    w_values.push_back(std::move(w_value));
  }
  const int64_t in = x_value.size(-1), rows = leading_rows(x_value);
#ifdef BRAID_CUDA
  if (x_value.device().is_cuda()) {
    // A decode step's few rows: one kernel streams every weight at the card's bandwidth. A weight
    // converted above was just written, so the weights count as constant only when used as stored.
    std::vector<kernels::cuda::GemvProduct> products;
    bool as_stored = true;
    for (size_t i = 0; i < weights.size(); ++i) {
      products.push_back({w_values[i].raw_data(), w_values[i].size(0), ys[i].raw_data(), w_values[i].size(0)});
      as_stored = as_stored && used_as_stored(w_values[i], weights[i]);
    }
    if (x_value.dtype() == DType::bf16 && kernels::cuda::gemv_supports(rows, in, x_value.raw_data(), in, products)) {
      cuda_set_device(x_value.device().index);
      kernels::cuda::gemv(rows, in, x_value.raw_data(), in, products, weights_are_constant && as_stored,
                          compute_stream());
    } else {
      for (size_t i = 0; i < weights.size(); ++i)
        cuda_product(false, true, rows, ys[i].size(-1), in, x_value, in, w_values[i], in, ys[i], ys[i].size(-1));
    }
  }
#endif
  std::vector<autograd::Var> outputs;
  for (size_t i = 0; i < weights.size(); ++i) {
    const int64_t out = w_values[i].size(0);
    if (!x_value.device().is_cuda()) {
      dispatch_cpu_float("linear", x_value.dtype(), [&]<typename T>() {
        gemm<T>(false, true, rows, out, in, T(1), x_value.data<T>(), in, w_values[i].data<T>(), in, T(0),
                ys[i].data<T>(), out);
      });
    }
    outputs.push_back(autograd::record(
        std::make_shared<LinearNode>(x_value, w_values[i], weights[i]->value.dtype()), {x, weights[i]}, ys[i]));
  }
  return outputs;
}

}  // namespace

autograd::Var linear(const autograd::Var& x, const autograd::Var& weight) {
  return linear_products(x, {weight}, false).front();
}

autograd::Var linear_of_constant_weight(const autograd::Var& x, const autograd::Var& weight) {
  return linear_products(x, {weight}, true).front();
}

std::vector<autograd::Var> linears_of_constant_weights(const autograd::Var& x,
                                                       const std::vector<autograd::Var>& weights) {
  BRAID_CHECK(!weights.empty(), "linears_of_constant_weights: no weights");
  return linear_products(x, weights, true);
}

autograd::Var swiglu_of_constant_weights(const autograd::Var& x, const autograd::Var& gate_weight,
                                         const autograd::Var& up_weight) {
#ifdef BRAID_CUDA
  // Only bf16 weights qualify, so checking the operands converts nothing.
  const bool bf16 = x->value.dtype() == DType::bf16 && gate_weight->value.dtype() == DType::bf16 &&
                    up_weight->value.dtype() == DType::bf16;
  if (!autograd::grad_enabled() && x->value.device().is_cuda() && bf16) {
    const auto [x_value, gate] = linear_operands(x, gate_weight);
    const Tensor up = linear_operands(x, up_weight).second;
    const int64_t rows = leading_rows(x_value), in = gate.size(1), out = gate.size(0);
    Shape y_shape = x_value.shape();
    y_shape.back() = out;
    Tensor y = Tensor::empty(y_shape, DType::bf16, x_value.device());
    const kernels::cuda::GemvProduct products[] = {{gate.raw_data(), out, y.raw_data(), out},
                                                   {up.raw_data(), out, y.raw_data(), out}};
    if (used_as_stored(gate, gate_weight) && used_as_stored(up, up_weight) && gate.shape() == up.shape() &&
        kernels::cuda::gemv_supports(rows, in, x_value.raw_data(), in, products)) {
      cuda_set_device(x_value.device().index);
      kernels::cuda::gemv(rows, in, x_value.raw_data(), in, products, true, compute_stream(),
                          kernels::cuda::GemvEpilogue::swiglu);
      return autograd::leaf(y);
    }
  }
#endif
  const std::vector<autograd::Var> gate_up = linears_of_constant_weights(x, {gate_weight, up_weight});
  return swiglu(gate_up[0], gate_up[1]);
}

}  // namespace braid::ops
