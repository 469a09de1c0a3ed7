// `make bench` (attention part): times the bf16 flash-attention kernels behind ops::attention,
// causal, at batch·seqlen = 16K (hidden 2048: 16 heads of 128 or 32 heads of 64; T = 2K, 4K, 8K),
// forward, backward (preprocess included) and forward + backward, and prints one JSON object per
// measurement. TFLOP/s follow the FlashAttention convention (KERNELS.md section 10.2): causal
// forward = 2·B·H·T²·D, backward = 2.5x, forward + backward = 3.5x. Before timing a shape it checks
// the bf16 results (output and the three gradients) against the fp32 kernels on the same inputs
// (relative RMS error <= 1e-2) and prints no timings for a shape that fails.
// tools/bench_attention_torch.py is the peer.
#include <cuda_runtime.h>

#include <cmath>
#include <cstdio>
#include <functional>
#include <string>
#include <vector>

#include "kernels/cuda/attention.h"
#include "runtime/cuda_check.h"
#include "runtime/cuda_stream.h"
#include "runtime/device.h"
#include "runtime/rng.h"
#include "runtime/tensor.h"
#include "tools/bench_timer.h"

namespace {

using braid::bench::time_ms;

using namespace braid;

struct BenchShape {
  int64_t batch, time, heads, dim;
};

const BenchShape kShapes[] = {
    {2, 8192, 16, 128}, {4, 4096, 16, 128}, {8, 2048, 16, 128},
    {2, 8192, 32, 64},  {4, 4096, 32, 64},  {8, 2048, 32, 64},
};

// Host f32 copy of a device tensor.
std::vector<float> host_floats(const Tensor& tensor) {
  Tensor host = tensor.to(DType::f32).to(Device::cpu());
  const float* data = host.data<float>();
  return std::vector<float>(data, data + host.numel());
}

// ||got - want|| / ||want|| over all elements; NaN if any element of `got` is not finite. bf16
// rounds P, dS and O as FlashAttention-2 does, which leaves a relative RMS error near 3e-3 against
// fp32 (tests/cuda/test_attention_cuda.cpp); a wrong kernel is off by O(1).
double relative_rms_error(const Tensor& got, const Tensor& want) {
  const std::vector<float> g = host_floats(got), w = host_floats(want);
  double error = 0, norm = 0;
  for (size_t i = 0; i < w.size(); ++i) {
    if (!std::isfinite(g[i])) return NAN;
    error += (double(g[i]) - w[i]) * (double(g[i]) - w[i]);
    norm += double(w[i]) * w[i];
  }
  return std::sqrt(error / norm);
}

// Everything one shape needs on the device, in `dtype` for activations.
struct Problem {
  kernels::cuda::AttentionDims dims;
  DType dtype;
  Tensor q, k, v, out, lse, d_out, d_q, d_k, d_v, workspace;

  Problem(const BenchShape& s, DType dtype_, const Tensor& q_, const Tensor& k_, const Tensor& v_,
          const Tensor& d_out_)
      : dims{s.batch, s.time, s.heads, s.heads, s.dim, s.dim}, dtype(dtype_) {
    const Device device = Device::cuda(0);
    q = q_.to(dtype);
    k = k_.to(dtype);
    v = v_.to(dtype);
    d_out = d_out_;
    out = Tensor::empty({s.batch, s.time, s.heads, s.dim}, dtype, device);
    lse = Tensor::empty({s.batch, s.heads, s.time}, DType::f32, device);
    d_q = Tensor::empty(q.shape(), DType::f32, device);
    d_k = Tensor::empty(k.shape(), DType::f32, device);
    d_v = Tensor::empty(v.shape(), DType::f32, device);
    workspace =
        Tensor::empty({int64_t(kernels::cuda::attention_backward_workspace_floats(dims, dtype))},
                      DType::f32, device);
  }
  void forward() {
    kernels::cuda::attention_forward(q.raw_data(), k.raw_data(), v.raw_data(), out.raw_data(),
                                     lse.data<float>(), dims, {}, scale(), dtype, compute_stream());
  }
  void backward() {
    kernels::cuda::attention_backward(q.raw_data(), k.raw_data(), v.raw_data(), out.raw_data(),
                                      lse.data<float>(), d_out.data<float>(), d_q.data<float>(),
                                      d_k.data<float>(), d_v.data<float>(), workspace.data<float>(),
                                      dims, {}, scale(), dtype, compute_stream());
  }
  float scale() const { return 1.0f / std::sqrt(float(dims.qk_dim)); }
};

}  // namespace

int main() {
  using namespace braid;
  try {
    BRAID_CHECK(cuda_available(), "bench_attention needs a CUDA device");
    cudaDeviceProp properties{};
    CUDA_CHECK(cudaGetDeviceProperties(&properties, 0));
    bool all_ok = true;
    for (const BenchShape& s : kShapes) {
      const std::string shape =
          str("B=", s.batch, " T=", s.time, " H=", s.heads, " D=", s.dim, " causal");
      Tensor q = Tensor::empty({s.batch, s.time, s.heads, s.dim}, DType::f32, Device::cuda(0));
      Tensor k = Tensor::empty(q.shape(), DType::f32, Device::cuda(0));
      Tensor v = Tensor::empty(q.shape(), DType::f32, Device::cuda(0));
      Tensor d_out = Tensor::empty(q.shape(), DType::f32, Device::cuda(0));
      fill_normal(q, 1, 0);
      fill_normal(k, 2, 0);
      fill_normal(v, 3, 0);
      fill_normal(d_out, 4, 0);
      // Round the inputs to bf16 once so both paths read the same numbers.
      q = q.to(DType::bf16).to(DType::f32);
      k = k.to(DType::bf16).to(DType::f32);
      v = v.to(DType::bf16).to(DType::f32);
      d_out = d_out.to(DType::bf16).to(DType::f32);

      Problem bf16(s, DType::bf16, q, k, v, d_out);
      {  // Stage "check": bf16 against the fp32 kernels, output and gradients, once per shape.
        Problem f32(s, DType::f32, q, k, v, d_out);
        f32.forward();
        f32.backward();
        bf16.forward();
        bf16.backward();
        const double errors[] = {
            relative_rms_error(bf16.out, f32.out), relative_rms_error(bf16.d_q, f32.d_q),
            relative_rms_error(bf16.d_k, f32.d_k), relative_rms_error(bf16.d_v, f32.d_v)};
        bool ok = true;
        for (double error : errors) ok = ok && error <= 1e-2;
        std::printf(
            "{\"bench\": \"attention check\", \"shape\": \"%s\", \"ok\": %s, "
            "\"relative_rms_error\": {\"out\": %.3g, \"d_q\": %.3g, \"d_k\": %.3g, \"d_v\": "
            "%.3g}}\n",
            shape.c_str(), ok ? "true" : "false", errors[0], errors[1], errors[2], errors[3]);
        if (!ok) {
          all_ok = false;
          continue;
        }
      }

      const double forward_flops =
          2.0 * double(s.batch) * double(s.heads) * double(s.time) * double(s.time) * double(s.dim);
      const int repeats = s.time >= 8192 ? 10 : 20;
      const double forward_ms = time_ms([&] { bf16.forward(); }, repeats);
      const double backward_ms = time_ms([&] { bf16.backward(); }, repeats);
      const double both_ms = time_ms(
          [&] {
            bf16.forward();
            bf16.backward();
          },
          repeats, 2);
      struct Row {
        const char* bench;
        double ms, flops;
      };
      for (const Row& row : {Row{"attention fwd", forward_ms, forward_flops},
                             Row{"attention bwd", backward_ms, 2.5 * forward_flops},
                             Row{"attention fwd+bwd", both_ms, 3.5 * forward_flops}}) {
        std::printf(
            "{\"bench\": \"%s\", \"engine\": \"braid mma.sync\", \"card\": \"%s\", "
            "\"shape\": \"%s\", \"ms\": %.4f, \"tflops\": %.1f}\n",
            row.bench, properties.name, shape.c_str(), row.ms, row.flops / (row.ms * 1e-3) / 1e12);
      }
      std::fflush(stdout);
    }
    return all_ok ? 0 : 1;
  } catch (const Error& error) {
    std::fprintf(stderr, "error: %s\n", error.message().c_str());
    return 1;
  }
}
