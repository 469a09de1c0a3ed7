// `make bench` (loss and optimizer part): times, on CUDA device 0,
//  - ops::lm_head_cross_entropy at the 1B presets' LM head (8192 rows, d 2048, GPT-2 V = 50257,
//    bf16 hidden, f32 weight): forward with both gradients plus the backward that scales them
//    (TFLOP/s of its three GEMMs), forward alone under no-grad (one GEMM), and as a peer the
//    unfused ops::linear + ops::cross_entropy forward and backward (same inputs, three GEMMs);
//  - the fused AdamW step over 256Mi f32 parameters (64 tensors of 2048 x 2048), GB/s of the bytes
//    it must move (param, grad, m, v read; param, m, v written), and the global gradient norm
//    (GB/s of the gradients read).
// One JSON object per line: bench, shape, ms, and tflops or gbps.
#include <cuda_runtime.h>

#include <cmath>
#include <cstdio>
#include <vector>

#include "autograd/tape.h"
#include "layers/ops/cross_entropy.h"
#include "layers/ops/matmul.h"
#include "runtime/cuda_check.h"
#include "runtime/rng.h"
#include "train/optimizer.h"
#include "tools/bench_timer.h"

namespace {

using braid::bench::time_ms;

using namespace braid;

void print(const char* card, const char* bench, const std::string& shape, double ms,
           const char* rate_name, double rate) {
  std::printf("{\"engine\": \"braid\", \"card\": \"%s\", \"bench\": \"%s\", \"shape\": \"%s\", "
              "\"ms\": %.4f, \"%s\": %.1f}\n",
              card, bench, shape.c_str(), ms, rate_name, rate);
  std::fflush(stdout);
}

}  // namespace

int main() {
  try {
    BRAID_CHECK(cuda_available(), "bench_loss needs a CUDA device");
    cudaDeviceProp properties{};
    CUDA_CHECK(cudaGetDeviceProperties(&properties, 0));
    const Device gpu = Device::cuda(0);
    {
      const int64_t rows = 8192, width = 2048, vocab = 50257;
      const std::string shape = str("rows ", rows, " d ", width, " V ", vocab, " bf16");
      Tensor hidden = Tensor::empty({rows, width}, DType::bf16, gpu);
      Tensor weight = Tensor::empty({vocab, width}, DType::f32, gpu);
      fill_normal(hidden, 1, 0);
      fill_normal(weight, 2, 0, 0.0, 1.0 / std::sqrt(double(width)));
      std::vector<double> ids(static_cast<size_t>(rows));
      uint64_t state = 12345;
      for (double& id : ids) {
        state = state * 6364136223846793005ull + 1442695040888963407ull;
        id = double((state >> 33) % uint64_t(vocab));
      }
      Tensor targets = Tensor::from_values(ids, {rows}, DType::i64).to(gpu);
      autograd::Var h = autograd::leaf(hidden, true), w = autograd::leaf(weight, true),
                    t = autograd::leaf(targets);
      const double gemm_flops = 2.0 * double(rows) * double(width) * double(vocab);

      const double fused_ms = time_ms(
          [&] {
            autograd::backward(ops::lm_head_cross_entropy(h, w, t));
            h->grad = Tensor();
            w->grad = Tensor();
          },
          10, 2);
      print(properties.name, "lm_head_cross_entropy fwd+bwd", shape, fused_ms, "tflops",
            3 * gemm_flops / (fused_ms * 1e-3) / 1e12);

      const double forward_ms = time_ms(
          [&] {
            autograd::NoGradScope no_grad;
            ops::lm_head_cross_entropy(h, w, t);
          },
          10, 2);
      print(properties.name, "lm_head_cross_entropy fwd (no grad)", shape, forward_ms, "tflops",
            gemm_flops / (forward_ms * 1e-3) / 1e12);

      // The unfused peer (HybridLM::loss before the switch): every row's logits, their f32
      // gradient and its bf16 copy, through ops::linear on the same f32 master weight.
      const double unfused_ms = time_ms(
          [&] {
            autograd::backward(ops::cross_entropy(ops::linear(h, w), t));
            h->grad = Tensor();
            w->grad = Tensor();
          },
          10, 2);
      print(properties.name, "linear + cross_entropy fwd+bwd (unfused)", shape, unfused_ms,
            "tflops", 3 * gemm_flops / (unfused_ms * 1e-3) / 1e12);
    }
    {
      const int64_t tensors = 64, side = 2048;
      const int64_t count = tensors * side * side;
      std::vector<Parameter> parameters;
      for (int64_t i = 0; i < tensors; ++i) {
        Tensor value = Tensor::empty({side, side}, DType::f32, gpu);
        Tensor grad = Tensor::empty({side, side}, DType::f32, gpu);
        fill_normal(value, 10 + uint64_t(i), 0, 0.0, 0.02);
        fill_normal(grad, 1000 + uint64_t(i), 0, 0.0, 1e-3);
        autograd::Var variable = autograd::leaf(value, true, str("w", i));
        variable->grad = grad;
        parameters.push_back({str("w", i), variable, Init{}, i % 2 == 0});
      }
      AdamW optimizer(parameters, AdamWConfig{});
      const std::string shape = str(count, " f32 parameters in ", tensors, " tensors");
      const double step_ms = time_ms([&] { optimizer.step(1e-4); }, 20);
      print(properties.name, "adamw step (fused)", shape, step_ms, "gbps",
            double(count) * 4 * 7 / (step_ms * 1e-3) / 1e9);
      const double norm_ms = time_ms([&] { optimizer.grad_norm(); }, 20);
      print(properties.name, "grad_norm", shape, norm_ms, "gbps",
            double(count) * 4 / (norm_ms * 1e-3) / 1e9);
    }
    return 0;
  } catch (const Error& error) {
    std::fprintf(stderr, "error: %s\n", error.message().c_str());
    return 1;
  }
}
