// Whole models on a CUDA device against the CPU backend: the tiny preset of every family (and an
// MoE variant) gives the same loss and every parameter gradient in fp32, and 50 bf16 training steps
// on the GPU follow the CPU's fp32 loss curve.
#include <cmath>
#include <string>
#include <vector>

#include "autograd/tape.h"
#include "layers/hybrid_lm.h"
#include "tests/cuda/cuda_test_util.h"
#include "train/optimizer.h"

namespace braid {
namespace {

using CudaModel = testing::CudaTest;

const char* const kFamilies[] = {"llama",      "swa-1to5",   "mamba",      "inter-1to1",
                                 "inter-1to3", "inter-1to5", "inter-1to12", "intra-1to1",
                                 "intra-1to5", "hymba-like", "falconh1-like"};

ModelConfig tiny(const std::string& family, bool moe = false) {
  ModelConfig config = load_model_config("configs/models/tiny/" + family + ".json");
  if (moe) {
    config.ffn.kind = FfnConfig::Kind::moe;
    config.name += " moe";
  }
  return config;
}

// Token ids (batch, time + 1) below `vocab` from the test's LCG, as inputs and next-token targets.
std::pair<Tensor, Tensor> tokens(int64_t batch, int64_t time, int64_t vocab, uint64_t seed) {
  const std::vector<uint32_t> ids = testing::sample_ids(size_t(batch * (time + 1)), uint64_t(vocab), seed);
  Tensor all = Tensor::from_values(std::vector<double>(ids.begin(), ids.end()), {batch, time + 1}, DType::i32);
  return {all.narrow(1, 0, time).contiguous(), all.narrow(1, 1, time).contiguous()};
}

std::unique_ptr<HybridLM> build(const ModelConfig& config, Device device, DType activations,
                                uint64_t seed) {
  auto model = std::make_unique<HybridLM>(config, TensorOptions{device, DType::f32});
  Generator generator(seed);
  model->initialize(generator);  // drawn on the host, so every device gets the same weights
  model->set_activation_dtype(activations);
  return model;
}

TEST_F(CudaModel, EveryTinyPresetMatchesTheCpuInFp32) {
  std::vector<ModelConfig> configs;
  for (const char* family : kFamilies) configs.push_back(tiny(family));
  configs.push_back(tiny("inter-1to5", true));
  configs.push_back(tiny("intra-1to5", true));
  uint64_t seed = 10;
  for (const ModelConfig& config : configs) {
    SCOPED_TRACE(config.name);
    // T = 50 leaves a ragged last SSD chunk (chunk 32) and attention tile.
    const auto [ids, targets] = tokens(2, 50, config.vocab_size, seed);
    auto cpu = build(config, Device::cpu(), DType::f32, seed);
    auto gpu = build(config, Device::cuda(0), DType::f32, seed);
    autograd::Var cpu_loss = cpu->loss(autograd::leaf(ids), autograd::leaf(targets));
    autograd::Var gpu_loss = gpu->loss(autograd::leaf(ids.to(Device::cuda(0))),
                                       autograd::leaf(targets.to(Device::cuda(0))));
    EXPECT_NEAR(gpu_loss->value.item(), cpu_loss->value.item(), 1e-4 * cpu_loss->value.item());
    autograd::backward(cpu_loss);
    autograd::backward(gpu_loss);
    const std::vector<Parameter> want = cpu->named_parameters(), got = gpu->named_parameters();
    ASSERT_EQ(want.size(), got.size());
    for (size_t i = 0; i < want.size(); ++i) {
      const Tensor& expected = want[i].variable->grad;
      const Tensor& actual = got[i].variable->grad;
      ASSERT_EQ(expected.defined(), actual.defined()) << want[i].name;
      if (!expected.defined()) continue;
      EXPECT_TRUE(actual.device().is_cuda()) << want[i].name;
      EXPECT_TRUE(testing::close_to_reference(actual.to_doubles(), expected.to_doubles(), 1e-4))
          << want[i].name;
    }
    seed += 10;
  }
}

// Losses of `steps` AdamW steps over a fixed cycle of batches that a model can learn (a short
// repeating token sequence), the same on every backend.
std::vector<double> train_curve(HybridLM& model, Device device, int steps) {
  const int64_t batch = 2, time = 64;
  std::vector<double> pattern;
  for (int64_t i = 0; i < batch * (time + 1); ++i) pattern.push_back(double((i * 7) % 23 + 100));
  Tensor all = Tensor::from_values(pattern, {batch, time + 1}, DType::i32);
  autograd::Var ids = autograd::leaf(all.narrow(1, 0, time).contiguous().to(device));
  autograd::Var targets = autograd::leaf(all.narrow(1, 1, time).contiguous().to(device));
  AdamW optimizer(model.named_parameters(), AdamWConfig{});
  std::vector<double> losses;
  for (int step = 0; step < steps; ++step) {
    optimizer.zero_grad();
    autograd::Var loss = model.loss(ids, targets);
    autograd::backward(loss);
    optimizer.clip(optimizer.grad_norm(), 1.0);
    optimizer.step(3e-3);
    model.update_routing_biases();
    losses.push_back(loss->value.item());
  }
  return losses;
}

TEST_F(CudaModel, Bf16TrainingTracksTheCpuFp32LossCurve) {
  const std::vector<ModelConfig> configs = {tiny("llama"), tiny("mamba"), tiny("inter-1to5"),
                                            tiny("intra-1to5"), tiny("intra-1to5", true)};
  for (const ModelConfig& config : configs) {
    SCOPED_TRACE(config.name);
    auto cpu = build(config, Device::cpu(), DType::f32, 5);
    auto gpu = build(config, Device::cuda(0), DType::bf16, 5);
    const std::vector<double> want = train_curve(*cpu, Device::cpu(), 50);
    const std::vector<double> got = train_curve(*gpu, Device::cuda(0), 50);
    // The curve must actually fall, or tracking it would prove nothing.
    ASSERT_LT(want.back(), want.front() - 1.0);
    for (size_t step = 0; step < want.size(); ++step)
      EXPECT_NEAR(got[step], want[step], 0.02 * want[step] + 0.02) << "step " << step;
  }
}

TEST_F(CudaModel, MixedPrecisionKeepsFp32MasterWeightsAndGradients) {
  auto model = build(tiny("intra-1to5"), Device::cuda(0), DType::bf16, 3);
  const auto [ids, targets] = tokens(1, 40, model->config().vocab_size, 4);
  autograd::Var loss = model->loss(autograd::leaf(ids.to(Device::cuda(0))),
                                   autograd::leaf(targets.to(Device::cuda(0))));
  autograd::backward(loss);
  for (const Parameter& parameter : model->named_parameters()) {
    EXPECT_EQ(parameter.variable->value.dtype(), DType::f32) << parameter.name;
    ASSERT_TRUE(parameter.variable->grad.defined()) << parameter.name;
    EXPECT_EQ(parameter.variable->grad.dtype(), DType::f32) << parameter.name;
  }
}

}  // namespace
}  // namespace braid
