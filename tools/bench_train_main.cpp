// `make bench` (training part): tokens/s, MFU and peak memory of whole training steps (forward,
// backward, gradient norm, clipping, AdamW) of model presets on one CUDA device in bf16 with fp32
// master weights, at micro-batch 1 and context 8192 by default, on random tokens.
//
// It drives HybridLM and AdamW directly rather than the train binary, so that it needs no corpus and
// times exactly the step. MFU = achieved FLOP/s over the card's dense bf16 peak (--peak-tflops,
// 989 for H100 SXM and H200), with FLOPs per token from MODEL.md section 7 (layers/cost_model.h).
//
// Under mpirun it measures weak scaling: every rank (one per GPU, device = local rank) trains its own
// micro-batch data-parallel (train/data_parallel.h: bucketed gradient all-reduce overlapped with
// backward, --zero1 optional); rank 0 prints tokens/s in total and per GPU. Efficiency at N GPUs is
// the per-GPU tokens/s at N over the single-GPU figure (run without mpirun).
//
//   build/bench_train [--seq 8192] [--steps 4] [--recompute] configs/models/1b/llama.json ...
//   NCCL_NVLS_ENABLE=0 mpirun -np 4 build/bench_train [--zero1] [--bucket-mb 25] configs/models/1b/intra-1to5.json
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
#include "layers/ops/elementwise.h"
#include "runtime/allocator.h"
#include "runtime/communicator.h"
#include "runtime/cuda_check.h"
#include "runtime/rng.h"
#include "train/data_parallel.h"
#include "train/optimizer.h"

namespace {

using namespace braid;

struct Options {
  int64_t seq = 8192;
  int64_t steps = 4;  // timed, after one warm-up step
  double peak_tflops = 989;
  bool recompute = false;
  bool zero1 = false;
  double bucket_mb = 25;
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
    else if (arg == "--zero1") options.zero1 = true;
    else if (arg == "--bucket-mb") options.bucket_mb = std::stod(value());
    else if (arg.rfind("--", 0) == 0) BRAID_FAIL("unknown option ", arg);
    else options.presets.push_back(arg);
  }
  BRAID_CHECK(!options.presets.empty(), "give one or more model config files (configs/models/...)");
  BRAID_CHECK(options.seq > 0 && options.steps > 0, "--seq and --steps must be positive");
  return options;
}

// Uniform token ids in [0, vocab) as an i32 (1, seq) tensor on `device`.
Tensor random_tokens(int64_t seq, int64_t vocab, uint64_t seed, const Device& device) {
  Tensor uniform = Tensor::empty({1, seq}, DType::f64);
  fill_uniform(uniform, seed, 0, 0.0, double(vocab));
  std::vector<double> ids = uniform.to_doubles();
  for (double& id : ids) id = std::floor(id);
  return Tensor::from_values(ids, {1, seq}, DType::i32).to(device);
}

void bench_preset(const std::string& path, const Options& options, const cudaDeviceProp& card, Communicator& world,
                  const Device& device) {
  const ModelConfig config = load_model_config(path);
  HybridLM model(config, TensorOptions{device, DType::f32});
  model.set_activation_dtype(DType::bf16);
  model.set_recompute(options.recompute);
  Generator generator(1);
  model.initialize(generator);
  const int ranks = world.size();
  std::unique_ptr<AdamW> optimizer;
  std::unique_ptr<DataParallel> parallel;
  if (ranks > 1 || options.zero1)
    parallel = std::make_unique<DataParallel>(model.named_parameters(), device, world,
                                              DataParallelOptions{options.zero1, int64_t(options.bucket_mb * (1 << 20)), {}});
  else
    optimizer = std::make_unique<AdamW>(model.named_parameters(), AdamWConfig{});
  Allocator& allocator = allocator_for(device);

  double loss = 0;
  auto step = [&](uint64_t seed) {
    if (parallel) parallel->zero_grad();
    else optimizer->zero_grad();
    // Each rank its own tokens, as each reads its own data in training.
    autograd::Var ids = autograd::leaf(random_tokens(options.seq + 1, config.vocab_size, seed + 1000003 * uint64_t(world.rank()), device));
    autograd::Var inputs = autograd::leaf(ids->value.narrow(1, 0, options.seq).contiguous());
    autograd::Var targets = autograd::leaf(ids->value.narrow(1, 1, options.seq).contiguous());
    autograd::Var value = model.loss(inputs, targets);
    if (parallel) {
      parallel->begin_reduction();
      autograd::backward(ranks > 1 ? ops::scale(value, 1.0 / ranks) : value);
      parallel->finish_reduction();
      parallel->clip(parallel->grad_norm(), 1.0);
      parallel->step(1e-4);
    } else {
      autograd::backward(value);
      optimizer->clip(optimizer->grad_norm(), 1.0);
      optimizer->step(1e-4);
    }
    loss = value->value.item();
  };
  step(0);  // warm-up: GEMM plans, allocator segments, NCCL connections
  CUDA_CHECK(cudaDeviceSynchronize());
  world.barrier();
  allocator.reset_peaks();
  const auto begin = std::chrono::steady_clock::now();
  for (int64_t s = 0; s < options.steps; ++s) step(uint64_t(s) + 1);
  CUDA_CHECK(cudaDeviceSynchronize());
  double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - begin).count() /
      double(options.steps);
  // The step of the job is the slowest rank's.
  std::vector<double> all(size_t(ranks), 0.0);
  all[size_t(world.rank())] = seconds;
  world.all_reduce_sum(all.data(), ranks);
  for (double t : all) seconds = std::max(seconds, t);
  const ModelCost cost = model_cost(config, options.seq);
  const double per_gpu = double(options.seq) / seconds;
  const double mfu = per_gpu * cost.flops_per_token / (options.peak_tflops * 1e12);
  if (world.rank() != 0) return;
  const nlohmann::json line = {{"bench", "train"},         {"card", card.name},
                               {"preset", path},            {"seq", options.seq},
                               {"micro_batch", 1},          {"dtype", "bf16"},
                               {"recompute", options.recompute}, {"gpus", ranks},
                               {"zero1", options.zero1},    {"step_ms", seconds * 1e3},
                               {"tokens_per_s", per_gpu * ranks}, {"tokens_per_s_per_gpu", per_gpu},
                               {"mfu", mfu}, {"flops_per_token", cost.flops_per_token},
                               {"peak_bytes", allocator.stats().peak_allocated}, {"loss", loss}};
  std::printf("%s\n", line.dump().c_str());
  std::fflush(stdout);
}

}  // namespace

int main(int argc, char** argv) {
  Communicator& world = Communicator::world();
  try {
    const Options options = parse(argc, argv);
    BRAID_CHECK(cuda_available(), "bench_train needs a CUDA device");
    BRAID_CHECK(world.local_rank() < cuda_device_count(), world.where(), ": local rank ", world.local_rank(),
                " has no GPU (", cuda_device_count(), " here)");
    const Device device = Device::cuda(world.local_rank());
    CUDA_CHECK(cudaSetDevice(device.index));
    cudaDeviceProp card{};
    CUDA_CHECK(cudaGetDeviceProperties(&card, device.index));
    for (const std::string& preset : options.presets) {
      if (world.size() > 1) {
        // One rank failing breaks the collectives of the others: end the job with the error.
        bench_preset(preset, options, card, world, device);
        continue;
      }
      try {
        bench_preset(preset, options, card, world, device);
      } catch (const Error& error) {
        // One preset failing (e.g. out of memory at this context) must not hide the others.
        const nlohmann::json line = {{"bench", "train"}, {"preset", preset}, {"error", error.message()}};
        std::printf("%s\n", line.dump().c_str());
      }
    }
    world.finalize();
    return 0;
  } catch (const Error& error) {
    std::fprintf(stderr, "error: %s: %s\n", world.where().c_str(), error.message().c_str());
    world.abort(1);
  }
}
