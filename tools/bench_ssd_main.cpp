// `make bench` (SSD part): times the CUDA SSD scan behind ops::ssd (kernels/cuda/ssd.h) in bf16 at
// the 1b Mamba layer shape (Bt = 1, H = 32, P = 128, N = 128, G = 1, chunk 256) at T = 8192 and
// T = 2048, forward alone and forward + backward, and prints one JSON object per line:
// {"bench", "card", "shape", "ms", "tflops"} with the FLOP counts of KERNELS.md 10.1
// (F_fwd = Di(4N + 2Q) + 2QNG, F_bwd = Di(8N + 6Q) + 4QNG per token; dense diagonal tiles).
// dy is bf16 too, as training hands it over (bf16 activations get bf16 gradients). Before timing a
// shape, its bf16 outputs and gradients are checked against the f32 (SIMT) path on the same
// bf16-rounded inputs; a mismatch ends the run with an error and no timings.
// Reference: the mamba_ssm Triton kernels take 0.98 ms forward and 4.15 ms forward + backward at
// T = 8192 (no PyTorch peer here).
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

#include "kernels/cuda/ssd.h"
#include "runtime/cuda_check.h"
#include "runtime/device.h"
#include "runtime/rng.h"
#include "runtime/tensor.h"
#include "tools/bench_timer.h"

namespace {

using braid::bench::time_ms;

using namespace braid;
namespace kc = braid::kernels::cuda;

struct BenchShape {
  const char* name;
  int64_t batch, seq, heads, head_dim, groups, state, chunk;
};

const BenchShape kShapes[] = {
    {"1b mamba layer, Bt=1 T=8192 H=32 P=128 N=128 G=1 chunk=256", 1, 8192, 32, 128, 1, 128, 256},
    {"1b mamba layer, Bt=1 T=2048 H=32 P=128 N=128 G=1 chunk=256", 1, 2048, 32, 128, 1, 128, 256},
};

const Device kGpu = Device::cuda(0);

// The inputs of one problem on the device: activations in `dtype`, the rest f32.
struct Inputs {
  Tensor x, dt_raw, dt_bias, A_log, B, C, D, dy;
  kc::SsdInputs pointers() const {
    return {x.raw_data(),       dt_raw.raw_data(), dt_bias.data<float>(), A_log.data<float>(),
            B.raw_data(),       C.raw_data(),      D.data<float>(),       nullptr};
  }
};

Inputs make_inputs(const kc::SsdProblem& p, uint64_t seed) {
  auto normal = [&](const Shape& shape, uint64_t offset, double stddev) {
    Tensor t = Tensor::empty(shape, DType::f32, kGpu);
    fill_normal(t, seed, offset, 0.0, stddev);
    return t.to(DType::bf16);  // the activations of a bf16 run
  };
  Inputs in;
  in.x = normal({p.batch, p.seq, p.heads, p.head_dim}, 0, 1.0);
  in.dt_raw = normal({p.batch, p.seq, p.heads}, uint64_t(1) << 40, 0.5);
  in.B = normal({p.batch, p.seq, p.groups, p.state}, uint64_t(2) << 40, 1.0);
  in.C = normal({p.batch, p.seq, p.groups, p.state}, uint64_t(3) << 40, 1.0);
  in.dy = normal({p.batch, p.seq, p.heads, p.head_dim}, uint64_t(4) << 40, 1.0);
  // MODEL.md's init: delta0 log-uniform in [1e-3, 0.1] (dt_bias = softplus^-1), A in [0.01, 2].
  std::vector<double> bias(size_t(p.heads)), A_log(size_t(p.heads)), D(size_t(p.heads));
  for (int64_t h = 0; h < p.heads; ++h) {
    const double f = (double(h) + 0.5) / double(p.heads);
    const double delta0 = std::exp(std::log(1e-3) + f * (std::log(0.1) - std::log(1e-3)));
    bias[size_t(h)] = delta0 + std::log(-std::expm1(-delta0));
    A_log[size_t(h)] = std::log(0.01 + std::fmod(f * 7.0, 1.0) * 1.99);
    D[size_t(h)] = 1.0;
  }
  in.dt_bias = Tensor::from_values(bias, {p.heads}).to(kGpu);
  in.A_log = Tensor::from_values(A_log, {p.heads}).to(kGpu);
  in.D = Tensor::from_values(D, {p.heads}).to(kGpu);
  return in;
}

// The same numbers with the activations widened to f32 (the reference run).
Inputs widened(const Inputs& in) {
  Inputs out = in;
  out.x = in.x.to(DType::f32);
  out.dt_raw = in.dt_raw.to(DType::f32);
  out.B = in.B.to(DType::f32);
  out.C = in.C.to(DType::f32);
  out.dy = in.dy.to(DType::f32);
  return out;
}

struct Outputs {
  Tensor y, final_state, dx, d_dt_raw, d_dt_bias, d_A_log, dB, dC, dD;
  std::vector<std::pair<const char*, Tensor>> named() const {
    return {{"y", y},         {"final_state", final_state}, {"dx", dx},
            {"d dt_raw", d_dt_raw}, {"d dt_bias", d_dt_bias}, {"d A_log", d_A_log},
            {"dB", dB},       {"dC", dC},                   {"dD", dD}};
  }
};

class Runner {
 public:
  Runner(const kc::SsdProblem& p, const Inputs& in, DType dtype) : p_(p), in_(in), dtype_(dtype) {
    out_.y = Tensor::empty(in.x.shape(), dtype, kGpu);
    out_.final_state = Tensor::empty({p.batch, p.heads, p.head_dim, p.state}, DType::f32, kGpu);
    out_.dx = Tensor::empty(in.x.shape(), DType::f32, kGpu);
    out_.d_dt_raw = Tensor::empty(in.dt_raw.shape(), DType::f32, kGpu);
    out_.d_dt_bias = Tensor::empty({p.heads}, DType::f32, kGpu);
    out_.d_A_log = Tensor::empty({p.heads}, DType::f32, kGpu);
    out_.dB = Tensor::empty(in.B.shape(), DType::f32, kGpu);
    out_.dC = Tensor::empty(in.C.shape(), DType::f32, kGpu);
    out_.dD = Tensor::empty({p.heads}, DType::f32, kGpu);
    forward_workspace_ =
        Tensor::empty({int64_t(kc::ssd_forward_workspace_floats(p))}, DType::f32, kGpu);
    backward_workspace_ =
        Tensor::empty({int64_t(kc::ssd_backward_workspace_floats(p, dtype))}, DType::f32, kGpu);
  }
  void forward() {
    kc::ssd_forward(p_, in_.pointers(), out_.y.raw_data(), out_.final_state.data<float>(),
                    forward_workspace_.data<float>(), dtype_, nullptr);
  }
  // Reads what the last forward() left in its workspace, as ops::ssd does.
  void backward() {
    const kc::SsdGrads grads{out_.dx.data<float>(),    out_.d_dt_raw.data<float>(),
                             out_.d_dt_bias.data<float>(), out_.d_A_log.data<float>(),
                             out_.dB.data<float>(),    out_.dC.data<float>(),
                             out_.dD.data<float>(),    nullptr};
    kc::ssd_backward(p_, in_.pointers(), forward_workspace_.data<float>(), in_.dy.raw_data(),
                     in_.dy.dtype(), nullptr, grads, backward_workspace_.data<float>(), dtype_, nullptr);
  }
  const Outputs& outputs() const { return out_; }

 private:
  kc::SsdProblem p_;
  Inputs in_;
  DType dtype_;
  Outputs out_;
  Tensor forward_workspace_, backward_workspace_;
};

// Worst |got - want| / (|want| + rms(want)) over a tensor: bf16 roundings of the tiles and states
// keep it around 1e-2 at worst; a wrong kernel is off by O(1).
double worst_error(const Tensor& got, const Tensor& want) {
  const std::vector<double> g = got.to_doubles(), w = want.to_doubles();
  double square_sum = 0;
  for (double v : w) square_sum += v * v;
  const double rms = w.empty() ? 0.0 : std::sqrt(square_sum / double(w.size()));
  double worst = 0;
  for (size_t i = 0; i < w.size(); ++i) {
    const double error = std::abs(g[i] - w[i]) / (std::abs(w[i]) + rms);
    if (!(error <= worst)) worst = error;  // NaN sticks
  }
  return worst;
}

}  // namespace

int main() {
  try {
    BRAID_CHECK(cuda_available(), "bench_ssd needs a CUDA device");
    cudaDeviceProp properties{};
    CUDA_CHECK(cudaGetDeviceProperties(&properties, 0));
    for (const BenchShape& shape : kShapes) {
      kc::SsdProblem p;
      p.batch = shape.batch;
      p.seq = shape.seq;
      p.heads = shape.heads;
      p.head_dim = shape.head_dim;
      p.groups = shape.groups;
      p.state = shape.state;
      p.chunk = shape.chunk;
      const Inputs inputs = make_inputs(p, 7);
      Runner bf16(p, inputs, DType::bf16);

      // Check once against the f32 path on the same numbers.
      {
        Runner f32(p, widened(inputs), DType::f32);
        bf16.forward();
        bf16.backward();
        f32.forward();
        f32.backward();
        CUDA_CHECK(cudaDeviceSynchronize());
        const auto got = bf16.outputs().named(), want = f32.outputs().named();
        double worst = 0;
        std::string worst_name = "";
        for (size_t i = 0; i < got.size(); ++i) {
          const double error = worst_error(got[i].second, want[i].second);
          if (!(error <= worst)) {
            worst = error;
            worst_name = got[i].first;
          }
        }
        std::printf("{\"bench\": \"ssd check bf16 vs f32\", \"card\": \"%s\", \"shape\": \"%s\", "
                    "\"worst_output\": \"%s\", \"worst_error\": %.3g}\n",
                    properties.name, shape.name, worst_name.c_str(), worst);
        BRAID_CHECK(worst <= 5e-2, "bench_ssd: the bf16 kernels disagree with the f32 path on ",
                    worst_name, " (error ", worst, " of |value| + rms) at ", shape.name,
                    "; no timings");
      }

      const double tokens = double(p.batch * p.seq);
      const double Di = double(p.heads * p.head_dim), N = double(p.state),
                   Q = double(p.chunk), G = double(p.groups);
      const double f_fwd = tokens * (Di * (4 * N + 2 * Q) + 2 * Q * N * G);
      const double f_bwd = tokens * (Di * (8 * N + 6 * Q) + 4 * Q * N * G);

      const double fwd_ms = time_ms([&] { bf16.forward(); }, 20);
      std::printf("{\"bench\": \"ssd forward bf16\", \"card\": \"%s\", \"shape\": \"%s\", "
                  "\"ms\": %.4f, \"tflops\": %.1f}\n",
                  properties.name, shape.name, fwd_ms, f_fwd / (fwd_ms * 1e-3) / 1e12);
      const double both_ms = time_ms(
          [&] {
            bf16.forward();
            bf16.backward();
          },
          10);
      std::printf("{\"bench\": \"ssd forward+backward bf16\", \"card\": \"%s\", \"shape\": \"%s\", "
                  "\"ms\": %.4f, \"tflops\": %.1f}\n",
                  properties.name, shape.name, both_ms,
                  (f_fwd + f_bwd) / (both_ms * 1e-3) / 1e12);
      std::fflush(stdout);
    }
    return 0;
  } catch (const Error& error) {
    std::fprintf(stderr, "error: %s\n", error.message().c_str());
    return 1;
  }
}
