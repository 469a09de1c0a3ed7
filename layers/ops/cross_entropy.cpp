#include "layers/ops/cross_entropy.h"

#include <algorithm>

#include "autograd/tape.h"
#include "kernels/cpu/cross_entropy.h"
#include "kernels/cpu/elementwise.h"
#include "kernels/cpu/gemm.h"
#include "layers/ops/checks.h"
#include "layers/ops/dispatch.h"

#ifdef BRAID_CUDA
#include "kernels/cuda/cross_entropy.h"
#include "kernels/cuda/elementwise.h"
#include "kernels/cuda/gemm.h"
#include "runtime/cuda_stream.h"
#include "runtime/device_copy.h"
#endif

namespace braid::ops {

namespace {

// Bound on one chunk's logits in lm_head_cross_entropy when the caller leaves the chunk automatic.
// The chunk's rows are the inner dimension of the weight-gradient GEMM: at 128K classes a 256 MiB
// bound gave 348-row chunks, which cuBLASLt ran at 91 TFLOP/s on an H200; 1 GiB gives >1K rows.
constexpr int64_t kLogitsChunkBytes = int64_t(1) << 30;

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

[[noreturn]] void fail_bad_target(const char* op, int64_t target, int64_t row, int64_t vocab,
                                  const char* what, const Shape& shape) {
  BRAID_FAIL(op, ": target ", target, " at row ", row, " is out of range for V = ", vocab,
             " classes (", what, " has shape ", shape_str(shape), ")");
}

// Host-side range check of i64 CPU targets, before any kernel reads them.
void check_targets_on_host(const char* op, const Tensor& targets_i64, int64_t vocab,
                           const char* what, const Shape& shape) {
  const int64_t* target = targets_i64.data<int64_t>();
  for (int64_t r = 0; r < targets_i64.numel(); ++r)
    if (target[r] < 0 || target[r] >= vocab) fail_bad_target(op, target[r], r, vocab, what, shape);
}

// Rows per chunk: the caller's choice, or the most whose logits fit kLogitsChunkBytes, evened out
// so the last chunk is not a sliver.
int64_t pick_chunk_rows(int64_t requested, int64_t rows, int64_t row_bytes) {
  if (requested > 0) return std::min(requested, rows);
  const int64_t most = std::max<int64_t>(1, kLogitsChunkBytes / std::max<int64_t>(row_bytes, 1));
  return ceil_div(rows, ceil_div(rows, most));
}

#ifdef BRAID_CUDA
// Address of element `index` of a contiguous device tensor.
void* element_address(const Tensor& tensor, int64_t index) {
  return static_cast<char*>(tensor.raw_data()) + index * int64_t(dtype_size(tensor.dtype()));
}

// After the kernels of one call: the same error as the host check when the row kernel flagged a
// target out of range. Reading the flag is the call's one synchronisation with the device.
void check_flagged_target(const char* op, const Tensor& first_bad_row, const Tensor& targets_i64,
                          int64_t vocab, const char* what, const Shape& shape) {
  const int64_t row = int64_t(first_bad_row.item());
  if (row < targets_i64.numel())
    fail_bad_target(op, int64_t(targets_i64.narrow(0, row, 1).item()), row, vocab, what, shape);
}
#endif

class CrossEntropyNode : public autograd::Node {
 public:
  CrossEntropyNode(Tensor logits, Tensor targets, Tensor lse)
      : logits_(std::move(logits)), targets_(std::move(targets)), lse_(std::move(lse)) {}
  const char* name() const override { return "cross_entropy"; }

  std::vector<Tensor> backward(const std::vector<Tensor>& grad_outputs) override {
#ifdef BRAID_CUDA
    if (logits_.device().is_cuda()) {
      // The seed stays on the device: the kernel reads it, the host never waits for it.
      const Device device = logits_.device();
      cuda_set_device(device.index);
      Tensor seed = grad_outputs[0].to(device).to(DType::f32).contiguous();
      Tensor d_logits = Tensor::empty(logits_.shape(), DType::f32, device);
      kernels::cuda::cross_entropy_backward(logits_.raw_data(), targets_.data<int64_t>(),
                                            lse_.data<float>(), seed.data<float>(),
                                            d_logits.data<float>(), logits_.size(0),
                                            logits_.size(1), logits_.dtype(), compute_stream());
      return {d_logits, Tensor()};
    }
#endif
    const double d_loss = grad_outputs[0].item();
    Tensor d_logits = Tensor::empty(logits_.shape(), logits_.dtype());
    dispatch_cpu_float("cross_entropy", logits_.dtype(), [&]<typename T>() {
      kernels::cpu::cross_entropy_backward<T>(logits_.data<T>(), targets_.data<int64_t>(),
                                              lse_.data<T>(), T(d_loss), d_logits.data<T>(),
                                              logits_.size(0), logits_.size(1));
    });
    return {d_logits, Tensor()};
  }

 private:
  Tensor logits_, targets_, lse_;  // targets: i64, contiguous; lse: f32 on CUDA
};

// The gradients lm_head_cross_entropy computed during its forward for a unit seed (fp32); backward
// scales them by the real one.
class LmHeadCrossEntropyNode : public autograd::Node {
 public:
  LmHeadCrossEntropyNode(Tensor d_hidden, Tensor d_weight, Shape hidden_shape)
      : d_hidden_(std::move(d_hidden)), d_weight_(std::move(d_weight)),
        hidden_shape_(std::move(hidden_shape)) {}
  const char* name() const override { return "lm_head_cross_entropy"; }

  std::vector<Tensor> backward(const std::vector<Tensor>& grad_outputs) override {
    const Tensor& any = d_hidden_.defined() ? d_hidden_ : d_weight_;
    if (!any.defined()) return {Tensor(), Tensor(), Tensor()};
#ifdef BRAID_CUDA
    if (any.device().is_cuda()) {
      const Device device = any.device();
      cuda_set_device(device.index);
      Tensor seed = grad_outputs[0].to(device).to(DType::f32).contiguous();
      auto scaled = [&](const Tensor& gradient) {
        if (!gradient.defined()) return Tensor();
        // f32 gradients are scaled in place; bf16 ones are widened into a fresh f32 tensor.
        Tensor out = gradient.dtype() == DType::f32
                         ? gradient
                         : Tensor::empty(gradient.shape(), DType::f32, device);
        kernels::cuda::scale_by_device_scalar(gradient.raw_data(), gradient.dtype(),
                                              seed.data<float>(), out.data<float>(),
                                              gradient.numel(), compute_stream());
        return out;
      };
      Tensor d_hidden = scaled(d_hidden_), d_weight = scaled(d_weight_);
      return {d_hidden.defined() ? d_hidden.reshape(hidden_shape_) : d_hidden, d_weight, Tensor()};
    }
#endif
    const double seed = grad_outputs[0].item();
    if (seed != 1.0) {
      dispatch_cpu_float("lm_head_cross_entropy", any.dtype(), [&]<typename T>() {
        for (Tensor* gradient : {&d_hidden_, &d_weight_})
          if (gradient->defined())
            kernels::cpu::scale(gradient->data<T>(), T(seed), gradient->data<T>(),
                                gradient->numel());
      });
    }
    return {d_hidden_.defined() ? d_hidden_.reshape(hidden_shape_) : Tensor(), d_weight_, Tensor()};
  }

 private:
  Tensor d_hidden_, d_weight_;  // (rows, d) and (V, d); undefined where no gradient is wanted
  Shape hidden_shape_;
};

struct LmHeadResult {
  Tensor loss, d_hidden, d_weight;
};

// The chunk loop on the CPU: hidden (rows, d), weight (V, d), targets i64 (rows), all contiguous.
LmHeadResult lm_head_cpu(const Tensor& hidden, const Tensor& weight, const Tensor& targets,
                         int64_t chunk_rows, bool want_hidden, bool want_weight) {
  const int64_t rows = hidden.size(0), width = hidden.size(1), vocab = weight.size(0);
  const DType dtype = hidden.dtype();
  const int64_t chunk = pick_chunk_rows(chunk_rows, rows, vocab * int64_t(dtype_size(dtype)));
  LmHeadResult out;
  out.loss = Tensor::empty({1}, dtype);
  if (want_hidden) out.d_hidden = Tensor::empty({rows, width}, dtype);
  if (want_weight) out.d_weight = Tensor::empty({vocab, width}, dtype);
  Tensor logits = Tensor::empty({chunk, vocab}, dtype), row_loss = Tensor::empty({rows}, dtype);
  dispatch_cpu_float("lm_head_cross_entropy", dtype, [&]<typename T>() {
    using kernels::cpu::gemm;
    const T* h = hidden.data<T>();
    const T* w = weight.data<T>();
    const int64_t* t = targets.data<int64_t>();
    T* l = logits.data<T>();
    T* loss_terms = row_loss.data<T>();
    for (int64_t start = 0; start < rows; start += chunk) {
      const int64_t count = std::min(chunk, rows - start);
      const T* h_chunk = h + start * width;
      // logits (count, V) = hidden_chunk Wᵀ
      gemm<T>(false, true, count, vocab, width, T(1), h_chunk, width, w, width, T(0), l, vocab);
        kernels::cpu::cross_entropy_rows<T>(l, vocab, t + start, nullptr, loss_terms + start,
                                          want_hidden || want_weight, T(1) / T(rows), count, vocab);
      // d_hidden_chunk (count, d) = d_logits W
      if (want_hidden)
        gemm<T>(false, false, count, width, vocab, T(1), l, vocab, w, width, T(0),
                out.d_hidden.data<T>() + start * width, width);
      // d_W (V, d) += d_logitsᵀ hidden_chunk
      if (want_weight)
        gemm<T>(true, false, vocab, width, count, T(1), l, vocab, h_chunk, width,
                start == 0 ? T(0) : T(1), out.d_weight.data<T>(), width);
    }
    double total = 0;  // in row order, in double, as cross_entropy_forward sums
    for (int64_t r = 0; r < rows; ++r) total += double(loss_terms[r]);
    out.loss.data<T>()[0] = T(total / double(rows));
  });
  return out;
}

#ifdef BRAID_CUDA
// The chunk loop on a CUDA device: hidden (rows, d) f32 or bf16, weight (V, d) f32, targets i64
// (rows), all contiguous on that device. One synchronisation, at the end (the target check).
LmHeadResult lm_head_cuda(const Tensor& hidden, const Tensor& weight, const Tensor& targets,
                          int64_t chunk_rows, bool want_hidden, bool want_weight) {
  using kernels::cuda::gemm;
  const Device device = hidden.device();
  cuda_set_device(device.index);
  const cudaStream_t stream = compute_stream();
  const DType dtype = hidden.dtype();
  const int64_t rows = hidden.size(0), width = hidden.size(1), vocab = weight.size(0);
  // Logits rows padded to a multiple of 8 elements (16 bytes in bf16): every row starts aligned for
  // cuBLASLt's fastest kernels and the row kernel's vector loads. The padding is never read.
  const int64_t ld = ceil_div(vocab, 8) * 8;
  // The logits and their gradient stay fp32 (cuBLASLt writes fp32 from bf16 operands), so the
  // softmax never sees rounded logits; in bf16 a rounded copy of d_logits feeds the two backward
  // products. Per row: 4 bytes, plus 2 for that copy.
  const int64_t row_bytes = ld * (dtype == DType::f32 ? 4 : 6);
  const int64_t chunk = pick_chunk_rows(chunk_rows, rows, row_bytes);

  // The GEMMs take the weight in the activation dtype: in bf16, one rounded copy per call.
  Tensor w = weight;
  if (dtype != DType::f32) {
    w = Tensor::empty(weight.shape(), dtype, device);
    kernels::cuda::scale(weight.raw_data(), DType::f32, 1.0f, w.raw_data(), dtype, weight.numel(),
                         stream);
  }
  LmHeadResult out;
  if (want_hidden) out.d_hidden = Tensor::empty({rows, width}, DType::f32, device);
  if (want_weight) out.d_weight = Tensor::empty({vocab, width}, DType::f32, device);
  Tensor logits = Tensor::empty({chunk, ld}, DType::f32, device);
  Tensor d_logits = dtype == DType::f32 ? logits : Tensor::empty({chunk, ld}, dtype, device);
  Tensor row_loss = Tensor::empty({rows}, DType::f32, device);
  Tensor first_bad_row = Tensor::full({1}, double(rows), DType::i64, device);
  const bool want_gradient = want_hidden || want_weight;
  for (int64_t index = 0, start = 0; start < rows; ++index, start += chunk) {
    const int64_t count = std::min(chunk, rows - start);
    const void* h_chunk = element_address(hidden, start * width);
    // logits (count, V) = hidden_chunk Wᵀ, fp32
    gemm(false, true, count, vocab, width, 1.0f, h_chunk, width, w.raw_data(), width, 0.0f,
         logits.raw_data(), ld, dtype, DType::f32, stream);
    // loss terms, and d_logits = (softmax - one-hot) / rows in x's dtype (in place in fp32)
    kernels::cuda::cross_entropy_rows(logits.raw_data(), ld, targets.data<int64_t>() + start,
                                      nullptr, row_loss.data<float>() + start,
                                      want_gradient ? d_logits.raw_data() : nullptr, dtype,
                                      1.0f / float(rows), count, vocab, start,
                                      first_bad_row.data<int64_t>(), DType::f32, stream);
    if (!want_gradient) continue;
    // d_hidden_chunk (count, d) = d_logits W, written fp32
    if (want_hidden)
      gemm(false, false, count, width, vocab, 1.0f, d_logits.raw_data(), ld, w.raw_data(), width,
           0.0f, element_address(out.d_hidden, start * width), width, dtype, DType::f32, stream);
    // d_W (V, d) += d_logitsᵀ hidden_chunk, accumulated in fp32 by the GEMM itself
    if (want_weight)
      gemm(true, false, vocab, width, count, 1.0f, d_logits.raw_data(), ld, h_chunk, width,
           index == 0 ? 0.0f : 1.0f, out.d_weight.raw_data(), width, dtype, DType::f32, stream);
  }
  out.loss = Tensor::empty({1}, DType::f32, device);
  kernels::cuda::mean_of_rows(row_loss.data<float>(), rows, out.loss.data<float>(), stream);
  check_flagged_target("lm_head_cross_entropy", first_bad_row, targets, vocab, "weight",
                       weight.shape());
  return out;
}
#endif

}  // namespace

autograd::Var cross_entropy(const autograd::Var& logits, const autograd::Var& targets) {
  const Tensor& l = logits->value;
  const Tensor& t = targets->value;
  check_dim("cross_entropy", "logits", l, 2);
  check_floating("cross_entropy", "logits", l);
  BRAID_CHECK(t.defined() && !is_floating(t.dtype()) && t.dim() == 1 && t.size(0) == l.size(0),
              "cross_entropy: logits has shape ", shape_str(l.shape()), " but targets is ",
              t.defined() ? t.describe() : "undefined",
              ": targets must be one integer per logits row");
  BRAID_CHECK(l.size(0) > 0 && l.size(1) > 0, "cross_entropy: logits has shape ",
              shape_str(l.shape()), ": the mean loss needs at least one row and one class");
  const int64_t rows = l.size(0), vocab = l.size(1);
#ifdef BRAID_CUDA
  if (l.device().is_cuda()) {
    check_backend("cross_entropy", "logits", l);
    const Device device = l.device();
    cuda_set_device(device.index);
    Tensor logits_value = l.contiguous();
    Tensor targets_i64 = t.to(device).to(DType::i64).contiguous();
    Tensor lse = Tensor::empty({rows}, DType::f32, device);
    Tensor row_loss = Tensor::empty({rows}, DType::f32, device);
    Tensor loss = Tensor::empty({1}, DType::f32, device);
    Tensor first_bad_row = Tensor::full({1}, double(rows), DType::i64, device);
    kernels::cuda::cross_entropy_rows(logits_value.raw_data(), vocab, targets_i64.data<int64_t>(),
                                      lse.data<float>(), row_loss.data<float>(), nullptr, l.dtype(), 0.0f,
                                      rows, vocab, 0, first_bad_row.data<int64_t>(), l.dtype(),
                                      compute_stream());
    kernels::cuda::mean_of_rows(row_loss.data<float>(), rows, loss.data<float>(), compute_stream());
    check_flagged_target("cross_entropy", first_bad_row, targets_i64, vocab, "logits", l.shape());
    return autograd::record(std::make_shared<CrossEntropyNode>(logits_value, targets_i64, lse),
                            {logits, targets}, loss);
  }
#endif
  check_cpu("cross_entropy", l);
  check_cpu("cross_entropy", t);
  Tensor targets_i64 = t.to(DType::i64).contiguous();
  check_targets_on_host("cross_entropy", targets_i64, vocab, "logits", l.shape());
  const int64_t* target = targets_i64.data<int64_t>();

  Tensor logits_value = l.contiguous();
  Tensor lse = Tensor::empty({rows}, l.dtype()), loss = Tensor::empty({1}, l.dtype());
  dispatch_cpu_float("cross_entropy", l.dtype(), [&]<typename T>() {
    loss.data<T>()[0] = T(kernels::cpu::cross_entropy_forward<T>(logits_value.data<T>(), target,
                                                                 lse.data<T>(), rows, vocab));
  });
  return autograd::record(std::make_shared<CrossEntropyNode>(logits_value, targets_i64, lse),
                          {logits, targets}, loss);
}

autograd::Var lm_head_cross_entropy(const autograd::Var& hidden, const autograd::Var& weight,
                                    const autograd::Var& targets, int64_t chunk_rows) {
  constexpr const char* op = "lm_head_cross_entropy";
  const Tensor& h = hidden->value;
  const Tensor& w = weight->value;
  const Tensor& t = targets->value;
  check_dim(op, "weight", w, 2);
  BRAID_CHECK(h.defined() && h.dim() >= 2, op, ": hidden must be (..., d) with at least 2 dimensions, got ",
              h.defined() ? h.describe() : "undefined", " (weight has shape ", shape_str(w.shape()), ")");
  BRAID_CHECK(h.size(-1) == w.size(1), op, ": hidden has shape ", shape_str(h.shape()),
              " but weight has shape ", shape_str(w.shape()), ": inner sizes ", h.size(-1), " and ",
              w.size(1), " differ");
  const Shape leading(h.shape().begin(), h.shape().end() - 1);
  const int64_t rows = shape_numel(leading), width = w.size(1), vocab = w.size(0);
  BRAID_CHECK(t.defined() && !is_floating(t.dtype()) && t.numel() == rows &&
                  (t.dim() == 1 || t.shape() == leading),
              op, ": hidden has shape ", shape_str(h.shape()), " but targets is ",
              t.defined() ? t.describe() : "undefined", ": targets must be one integer per hidden row");
  BRAID_CHECK(rows > 0 && vocab > 0 && width > 0, op, ": hidden has shape ", shape_str(h.shape()),
              " and weight has shape ", shape_str(w.shape()),
              ": the mean loss needs at least one row, one class and one feature");
  BRAID_CHECK(chunk_rows >= 0, op, ": chunk_rows must be >= 0 (0 picks it), got ", chunk_rows);
  check_backend(op, "hidden", h);
  check_param(op, "weight", w, h);
  // The gradients the tape will ask for; computed now, while the logits are at hand.
  const bool want_hidden = autograd::grad_enabled() && hidden->requires_grad;
  const bool want_weight = autograd::grad_enabled() && weight->requires_grad;
  Tensor hidden_value = h.contiguous().reshape({rows, width}), weight_value = w.contiguous();
  Tensor targets_i64 = t.to(h.device()).to(DType::i64).contiguous().reshape({rows});

  LmHeadResult result;
#ifdef BRAID_CUDA
  if (h.device().is_cuda())
    result = lm_head_cuda(hidden_value, weight_value, targets_i64, chunk_rows, want_hidden,
                          want_weight);
#endif
  if (h.device().is_cpu()) {
    check_targets_on_host(op, targets_i64, vocab, "weight", w.shape());
    result = lm_head_cpu(hidden_value, weight_value, targets_i64, chunk_rows, want_hidden,
                         want_weight);
  }
  return autograd::record(
      std::make_shared<LmHeadCrossEntropyNode>(result.d_hidden, result.d_weight, h.shape()),
      {hidden, weight, targets}, result.loss);
}

}  // namespace braid::ops
