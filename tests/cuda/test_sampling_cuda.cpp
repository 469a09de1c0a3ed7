// GPU sampling (layers/ops/sampling.h) against the host sampler braid::sample_token on the same
// fp32 logits: greedy, temperature, top-k, top-p and their mixes, several draws, vocab 50304 and odd
// sizes, with and without ties; then a CUDA session's generate against host sampling of that
// session's own logits. The GPU forms its probability sums in a different order (runs joined by a
// block scan; the host adds one by one), so the two can differ only when a draw or the top-p cut
// lands within ~1e-15 relative of a boundary: fresh random logits never hit that.
#include <algorithm>
#include <cmath>
#include <set>

#include "infer/session.h"
#include "layers/ops/sampling.h"
#include "layers/sampling.h"
#include "tests/cuda/cuda_test_util.h"

namespace braid {
namespace {

using CudaSampling = testing::CudaTest;

// Tokens sample_token picks from each row of `logits` (batch, vocab) f32 on the host.
std::vector<uint32_t> host_samples(const Tensor& logits, const SamplingConfig& config, uint64_t draw) {
  const int64_t batch = logits.size(0), vocab = logits.size(1);
  const std::vector<double> values = logits.to_doubles();
  std::vector<uint32_t> tokens;
  for (int64_t b = 0; b < batch; ++b)
    tokens.push_back(sample_token(std::vector<double>(values.begin() + b * vocab, values.begin() + (b + 1) * vocab),
                                  config, draw));
  return tokens;
}

std::vector<uint32_t> device_samples(const Tensor& logits, const SamplingConfig& config, uint64_t draw) {
  const Tensor ids = ops::sample_tokens(logits.to(Device::cuda(0)), config.temperature, config.top_k, config.top_p,
                                        config.seed, draw);
  EXPECT_EQ(ids.dtype(), DType::i32);
  EXPECT_EQ(ids.shape(), Shape({logits.size(0)}));
  std::vector<uint32_t> tokens;
  for (double id : ids.to(Device::cpu()).to_doubles()) tokens.push_back(uint32_t(id));
  return tokens;
}

SamplingConfig config_of(double temperature, int64_t top_k, double top_p, uint64_t seed) {
  SamplingConfig config;
  config.temperature = temperature;
  config.top_k = top_k;
  config.top_p = top_p;
  config.seed = seed;
  return config;
}

const SamplingConfig kConfigs[] = {
    config_of(0.0, 0, 1.0, 1),     // greedy
    config_of(1.0, 0, 1.0, 2),     // plain temperature over the whole vocabulary
    config_of(0.7, 50, 1.0, 3),    // top-k
    config_of(1.3, 0, 0.9, 4),     // top-p
    config_of(0.8, 200, 0.95, 5),  // both
    config_of(1.0, 1, 1.0, 6),     // top-k 1: greedy through the sampling path
    config_of(2.0, 0, 0.3, 7),     // a small nucleus
    config_of(0.9, 100000, 0.99, 8),  // top-k beyond the vocabulary
};

// Random logits (stddev `spread`) for each shape and config, several draws: every row's token
// equals the host's, and the sampled (not greedy) draws pick varied tokens (the test exercises the
// draw, not only the maximum).
void expect_matches_host(int64_t batch, int64_t vocab, double spread, uint64_t seed) {
  std::set<uint32_t> sampled;
  for (const SamplingConfig& config : kConfigs) {
    const Tensor logits = testing::random_normal({batch, vocab}, seed + config.seed, DType::f32, spread);
    for (uint64_t draw = 0; draw < 6; ++draw) {
      const std::vector<uint32_t> want = host_samples(logits, config, draw);
      EXPECT_EQ(device_samples(logits, config, draw), want)
          << "batch " << batch << ", vocab " << vocab << ", temperature " << config.temperature << ", top_k "
          << config.top_k << ", top_p " << config.top_p << ", draw " << draw;
      if (config.temperature > 0 && config.top_k != 1) sampled.insert(want.begin(), want.end());
    }
  }
  EXPECT_GE(sampled.size(), std::min<size_t>(size_t(vocab), 3)) << "vocab " << vocab;
}

TEST_F(CudaSampling, MatchesHostSamplerAtGpt2Vocab) { expect_matches_host(4, 50304, 2.0, 100); }

TEST_F(CudaSampling, MatchesHostSamplerAtOddSizes) {
  expect_matches_host(3, 97, 1.5, 200);
  expect_matches_host(1, 1001, 3.0, 300);
  expect_matches_host(5, 3, 1.0, 400);
  expect_matches_host(2, 4099, 0.5, 500);
}

// Logits with many exact ties (integers in [-3, 3]): candidates of equal logit go in id order, so
// greedy and the top-k cut pick the lowest ids among ties, as on the host.
TEST_F(CudaSampling, TiesResolveByLowerIdLikeTheHost) {
  Tensor logits = testing::random_uniform({4, 5003}, 600, -3.5, 3.5, DType::f64);
  std::vector<double> rounded = logits.to_doubles();
  for (double& value : rounded) value = std::round(value);
  rounded[7] = -0.0;  // -0 and +0 tie
  const Tensor tied = Tensor::from_values(rounded, {4, 5003}, DType::f32);
  for (const SamplingConfig& config : {config_of(0.0, 0, 1.0, 1), config_of(1.0, 3, 1.0, 2), config_of(0.5, 40, 1.0, 3),
                                       config_of(1.0, 0, 0.8, 4)})
    for (uint64_t draw = 0; draw < 4; ++draw)
      EXPECT_EQ(device_samples(tied, config, draw), host_samples(tied, config, draw))
          << "temperature " << config.temperature << ", top_k " << config.top_k << ", draw " << draw;
}

TEST_F(CudaSampling, RejectsBadInput) {
  const Tensor logits = testing::random_normal({2, 10}, 700, DType::f32).to(Device::cuda(0));
  EXPECT_THROW(ops::sample_tokens(logits.reshape({20}), 1.0, 0, 1.0, 0, 0), Error);
  EXPECT_THROW(ops::sample_tokens(logits, 1.0, -1, 1.0, 0, 0), Error);
  EXPECT_THROW(ops::sample_tokens(logits.to(Device::cpu()), 1.0, 0, 1.0, 0, 0), Error);
}

// A CUDA session's generate (device sampler, ids only back to the host) picks what the host sampler
// picks from the same session's logits step by step.
TEST_F(CudaSampling, SessionGenerateMatchesHostSamplingOfItsLogits) {
  ModelConfig model_config = load_model_config("configs/models/tiny/intra-1to5.json");
  model_config.vocab_size = 301;
  model_config.init_std = 0.3;
  HybridLM model(model_config, TensorOptions{Device::cuda(0), DType::f32});
  Generator generator(17);
  model.initialize(generator);
  const SamplingConfig sampling = config_of(0.9, 40, 0.95, 21);
  infer::SessionOptions options;
  options.batch = 3;
  options.max_length = 40;
  options.cuda_graph = false;
  const std::vector<std::vector<uint32_t>> prompts = {testing::sample_ids(9, 301, 1), testing::sample_ids(3, 301, 2),
                                                      testing::sample_ids(14, 301, 3)};
  infer::Session session(model, options);
  const auto generated = session.generate(prompts, 10, sampling);

  infer::Session reference(model, options);
  Tensor logits = reference.prefill(prompts);
  for (int64_t step = 0; step < 10; ++step) {
    const std::vector<uint32_t> tokens = host_samples(logits.to(Device::cpu()), sampling, uint64_t(step));
    for (size_t b = 0; b < tokens.size(); ++b) EXPECT_EQ(generated[b][size_t(step)], tokens[b]) << "step " << step;
    logits = reference.decode(tokens);
  }
}

}  // namespace
}  // namespace braid
