// `make bench` (training part): tokens/s, MFU and peak memory of whole training steps (forward,
// backward, gradient norm, clipping, AdamW) of model presets on one CUDA device in bf16 with fp32
// master weights, at micro-batch 1 and context 8192 by default, on random tokens.
//
// It drives HybridLM and AdamW directly rather than the train binary, so that it needs no corpus and
// times exactly the step. MFU = achieved FLOP/s over the card's dense bf16 peak (--peak-tflops,
// 989 for H100 SXM and H200), with FLOPs per token from MODEL.md section 7 (layers/cost_model.h).
//
//   build/bench_train [--seq 8192] [--steps 4] [--recompute] configs/models/1b/llama.json ...
#include <cuda_runtime.h>
#include <nlohmann/json.hpp>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "autograd/tape.h"
#include "layers/cost_model.h"
#include "layers/hybrid_lm.h"
#include "runtime/allocator.h"
#include "runtime/cuda_check.h"
#include "runtime/rng.h"
#include "train/optimizer.h"

namespace {

using namespace braid;

struct Options {
  int64_t seq = 8192;
  int64_t steps = 4;  // timed, after one warm-up step
  double peak_tflops = 989;
  bool recompute = false;
  std::vector<std::string> presets;
};

Options parse(int argc, char** argv) {
  Options options;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    auto value = [&]() -> std::string {
      BRAID_CHECK(i + 1 < argc, arg, " needs a value");
      return argv[++i];
    };
    if (arg == "--seq") options.seq = std::stoll(value());
    else if (arg == "--steps") options.steps = std::stoll(value());
    else if (arg == "--peak-tflops") options.peak_tflops = std::stod(value());
    else if (arg == "--recompute") options.recompute = true;
    else if (arg.rfind("--", 0) == 0) BRAID_FAIL("unknown option ", arg);
    else options.presets.push_back(arg);
  }
  BRAID_CHECK(!options.presets.empty(), "give one or more model config files (configs/models/...)");
  BRAID_CHECK(options.seq > 0 && options.steps > 0, "--seq and --steps must be positive");
  return options;
}

// Uniform token ids in [0, vocab) as an i32 (1, seq) tensor on the device.
Tensor random_tokens(int64_t seq, int64_t vocab, uint64_t seed) {
  Tensor uniform = Tensor::empty({1, seq}, DType::f64);
  fill_uniform(uniform, seed, 0, 0.0, double(vocab));
  std::vector<double> ids = uniform.to_doubles();
  for (double& id : ids) id = std::floor(id);
  return Tensor::from_values(ids, {1, seq}, DType::i32).to(Device::cuda(0));
}

void bench_preset(const std::string& path, const Options& options, const cudaDeviceProp& card) {
  const ModelConfig config = load_model_config(path);
  HybridLM model(config, TensorOptions{Device::cuda(0), DType::f32});
  model.set_activation_dtype(DType::bf16);
  model.set_recompute(options.recompute);
  Generator generator(1);
  model.initialize(generator);
  AdamW optimizer(model.named_parameters(), AdamWConfig{});
  Allocator& allocator = allocator_for(Device::cuda(0));

  double loss = 0;
  auto step = [&](uint64_t seed) {
    optimizer.zero_grad();
    autograd::Var ids = autograd::leaf(random_tokens(options.seq + 1, config.vocab_size, seed));
    autograd::Var inputs = autograd::leaf(ids->value.narrow(1, 0, options.seq).contiguous());
    autograd::Var targets = autograd::leaf(ids->value.narrow(1, 1, options.seq).contiguous());
    autograd::Var value = model.loss(inputs, targets);
    autograd::backward(value);
    optimizer.clip(optimizer.grad_norm(), 1.0);
    optimizer.step(1e-4);
    loss = value->value.item();
  };
  step(0);  // warm-up: GEMM plans, allocator segments
  CUDA_CHECK(cudaDeviceSynchronize());
  allocator.reset_peaks();
  const auto begin = std::chrono::steady_clock::now();
  for (int64_t s = 0; s < options.steps; ++s) step(uint64_t(s) + 1);
  CUDA_CHECK(cudaDeviceSynchronize());
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - begin).count() /
      double(options.steps);
  const ModelCost cost = model_cost(config, options.seq);
  const double tokens_per_second = double(options.seq) / seconds;
  const double mfu = tokens_per_second * cost.flops_per_token / (options.peak_tflops * 1e12);
  const nlohmann::json line = {{"bench", "train"},         {"card", card.name},
                               {"preset", path},            {"seq", options.seq},
                               {"micro_batch", 1},          {"dtype", "bf16"},
                               {"recompute", options.recompute}, {"step_ms", seconds * 1e3},
                               {"tokens_per_s", tokens_per_second}, {"mfu", mfu},
                               {"flops_per_token", cost.flops_per_token},
                               {"peak_bytes", allocator.stats().peak_allocated}, {"loss", loss}};
  std::printf("%s\n", line.dump().c_str());
  std::fflush(stdout);
}

}  // namespace

int main(int argc, char** argv) {
  try {
    const Options options = parse(argc, argv);
    BRAID_CHECK(cuda_available(), "bench_train needs a CUDA device");
    cudaDeviceProp card{};
    CUDA_CHECK(cudaGetDeviceProperties(&card, 0));
    for (const std::string& preset : options.presets) {
      try {
        bench_preset(preset, options, card);
      } catch (const Error& error) {
        // One preset failing (e.g. out of memory at this context) must not hide the others.
        const nlohmann::json line = {{"bench", "train"}, {"preset", preset}, {"error", error.message()}};
        std::printf("%s\n", line.dump().c_str());
      }
    }
    return 0;
  } catch (const Error& error) {
    std::fprintf(stderr, "error: %s\n", error.message().c_str());
    return 1;
  }
}
