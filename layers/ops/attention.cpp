#include "layers/ops/attention.h"

#include <cmath>
#include <cstdint>

#include "autograd/tape.h"
#include "kernels/cpu/attention.h"
#include "layers/ops/checks.h"
#include "layers/ops/dispatch.h"
#include "layers/ops/layout.h"

#ifdef BRAID_CUDA
#include "kernels/cuda/attention.h"
#include "runtime/cuda_stream.h"
#include "runtime/device_copy.h"
#endif

namespace braid::ops {

namespace {

using kernels::cpu::AttentionDims;
using kernels::cpu::AttentionMask;

class AttentionNode : public autograd::Node {
 public:
  AttentionNode(Tensor q, Tensor k, Tensor v, Tensor out, Tensor lse, AttentionDims dims,
                AttentionMask mask, double scale)
      : q_(std::move(q)), k_(std::move(k)), v_(std::move(v)), out_(std::move(out)),
        lse_(std::move(lse)), dims_(dims), mask_(mask), scale_(scale) {}
  const char* name() const override { return "attention"; }

  std::vector<Tensor> backward(const std::vector<Tensor>& grad_outputs) override {
#ifdef BRAID_CUDA
    if (q_.device().is_cuda()) return cuda_backward(grad_outputs);
#endif
    Tensor d_q = Tensor::zeros(q_.shape(), q_.dtype());
    Tensor d_k = Tensor::zeros(k_.shape(), k_.dtype());
    Tensor d_v = Tensor::zeros(v_.shape(), v_.dtype());
    if (!grad_outputs[0].defined()) return {d_q, d_k, d_v};
    Tensor d_out = grad_outputs[0].to(q_.dtype()).contiguous();
    dispatch_cpu_float("attention", q_.dtype(), [&]<typename T>() {
      kernels::cpu::attention_backward<T>(q_.data<T>(), k_.data<T>(), v_.data<T>(), out_.data<T>(),
                                          lse_.data<T>(), d_out.data<T>(), d_q.data<T>(),
                                          d_k.data<T>(), d_v.data<T>(), dims_, mask_, T(scale_));
    });
    return {d_q, d_k, d_v};
  }

 private:
#ifdef BRAID_CUDA
  // Gradients computed and handed over in f32 (autograd/variable.h) from the saved q, k, v, out (f32
  // or bf16) and f32 LSE.
  std::vector<Tensor> cuda_backward(const std::vector<Tensor>& grad_outputs) {
    const Device device = q_.device();
    if (!grad_outputs[0].defined())
      return {Tensor::zeros(q_.shape(), DType::f32, device),
              Tensor::zeros(k_.shape(), DType::f32, device),
              Tensor::zeros(v_.shape(), DType::f32, device)};
    Tensor d_out = grad_outputs[0].to(DType::f32).contiguous();
    Tensor d_q = Tensor::empty(q_.shape(), DType::f32, device);
    Tensor d_k = Tensor::empty(k_.shape(), DType::f32, device);
    Tensor d_v = Tensor::empty(v_.shape(), DType::f32, device);
    Tensor workspace = Tensor::empty(
        {int64_t(kernels::cuda::attention_backward_workspace_floats(dims_, q_.dtype()))},
        DType::f32, device);
    cuda_set_device(device.index);
    kernels::cuda::attention_backward(q_.raw_data(), k_.raw_data(), v_.raw_data(),
                                      out_.raw_data(), lse_.data<float>(), d_out.data<float>(),
                                      d_q.data<float>(), d_k.data<float>(), d_v.data<float>(),
                                      workspace.data<float>(), dims_, mask_, float(scale_),
                                      q_.dtype(), compute_stream());
    return {d_q, d_k, d_v};
  }
#endif

  Tensor q_, k_, v_, out_, lse_;
  AttentionDims dims_;
  AttentionMask mask_;
  double scale_;
};

// Raises naming both operands' shapes when `ok` is false.
void check_pair(bool ok, const char* what_a, const Tensor& a, const char* what_b, const Tensor& b,
                const char* problem) {
  BRAID_CHECK(ok, "attention: ", problem, ": ", what_a, " has shape ", shape_str(a.shape()), ", ",
              what_b, " has shape ", shape_str(b.shape()));
}

}  // namespace

autograd::Var attention(const autograd::Var& q, const autograd::Var& k, const autograd::Var& v,
                        const AttentionOptions& options) {
  check_dim("attention", "q", q->value, 4);
  check_dim("attention", "k", k->value, 4);
  check_dim("attention", "v", v->value, 4);
  check_same_type("attention", "q", q->value, "k", k->value);
  check_same_type("attention", "q", q->value, "v", v->value);
  check_floating("attention", "q", q->value);
  check_backend("attention", "q", q->value);
  const Tensor &qv = q->value, &kv = k->value, &vv = v->value;
  check_pair(qv.size(0) == kv.size(0) && qv.size(1) == kv.size(1), "q (B, T, Hq, Dqk)", qv,
             "k (B, T, Hk, Dqk)", kv, "batch and time must match");
  check_pair(kv.size(0) == vv.size(0) && kv.size(1) == vv.size(1), "k (B, T, Hk, Dqk)", kv,
             "v (B, T, Hk, Dv)", vv, "batch and time must match");
  check_pair(kv.size(2) == vv.size(2), "k (B, T, Hk, Dqk)", kv, "v (B, T, Hk, Dv)", vv,
             "k and v must have the same number of kv heads");
  check_pair(kv.size(2) > 0 && qv.size(2) % kv.size(2) == 0, "q (B, T, Hq, Dqk)", qv,
             "k (B, T, Hk, Dqk)", kv, "query heads must be a multiple of kv heads");
  check_pair(qv.size(3) == kv.size(3), "q (B, T, Hq, Dqk)", qv, "k (B, T, Hk, Dqk)", kv,
             "q and k must have the same head dim");
  BRAID_CHECK(qv.size(3) > 0, "attention: head dim must be positive, got q of shape ",
              shape_str(qv.shape()));
  BRAID_CHECK(options.window >= 0 && options.sink >= 0,
              "attention: window and sink must be >= 0, got window ", options.window, ", sink ",
              options.sink);
  BRAID_CHECK(std::isfinite(options.scale), "attention: scale must be finite, got ", options.scale);

  AttentionDims dims{qv.size(0), qv.size(1), qv.size(2), kv.size(2), qv.size(3), vv.size(3)};
  AttentionMask mask{options.window, options.sink};
  double scale = options.scale != 0 ? options.scale : 1.0 / std::sqrt(double(dims.qk_dim));
  Tensor qc = qv.contiguous(), kc = kv.contiguous(), vc = vv.contiguous();
#ifdef BRAID_CUDA
  if (qc.device().is_cuda()) {
    // Head dims the tensor-core kernel has no tile for (the tiny presets' 8 and 16) run through
    // the fp32 kernel on widened copies: correct everywhere, fast where it matters.
    if (qc.dtype() == DType::bf16 &&
        !kernels::cuda::attention_supported(dims.qk_dim, dims.v_dim, DType::bf16) &&
        kernels::cuda::attention_supported(dims.qk_dim, dims.v_dim, DType::f32))
      return cast(attention(cast(q, DType::f32), cast(k, DType::f32), cast(v, DType::f32), options),
                  DType::bf16);
    BRAID_CHECK(kernels::cuda::attention_supported(dims.qk_dim, dims.v_dim, qc.dtype()),
                "attention: the CUDA kernels take Q/K head dims 64, 72, 96 or 128 with a V head dim "
                "equal to it or 128 in bf16 (any head dims up to 128 in f32), got q of shape ",
                shape_str(qv.shape()), " and v of shape ", shape_str(vv.shape()), " in ",
                dtype_name(qc.dtype()));
    // The bf16 kernel reads rows with 16-byte copies: realign views that start mid-allocation.
    auto aligned = [](const Tensor& t) {
      return reinterpret_cast<uintptr_t>(t.raw_data()) % 16 == 0 ? t : t.clone();
    };
    qc = aligned(qc);
    kc = aligned(kc);
    vc = aligned(vc);
    Tensor out = Tensor::empty({dims.batch, dims.time, dims.q_heads, dims.v_dim}, qc.dtype(),
                               qc.device());
    Tensor lse = Tensor::empty({dims.batch, dims.q_heads, dims.time}, DType::f32, qc.device());
    cuda_set_device(qc.device().index);
    kernels::cuda::attention_forward(qc.raw_data(), kc.raw_data(), vc.raw_data(), out.raw_data(),
                                     lse.data<float>(), dims, mask, float(scale), qc.dtype(),
                                     compute_stream());
    return autograd::record(
        std::make_shared<AttentionNode>(qc, kc, vc, out, lse, dims, mask, scale), {q, k, v}, out);
  }
#endif
  Tensor out = Tensor::empty({dims.batch, dims.time, dims.q_heads, dims.v_dim}, qc.dtype());
  Tensor lse = Tensor::empty({dims.batch, dims.q_heads, dims.time}, qc.dtype());
  dispatch_cpu_float("attention", qc.dtype(), [&]<typename T>() {
    kernels::cpu::attention_forward<T>(qc.data<T>(), kc.data<T>(), vc.data<T>(), out.data<T>(),
                                       lse.data<T>(), dims, mask, T(scale));
  });
  return autograd::record(std::make_shared<AttentionNode>(qc, kc, vc, out, lse, dims, mask, scale),
                          {q, k, v}, out);
}

}  // namespace braid::ops
