// The inference session on CUDA: for every tiny family (and MoE), an fp32 session's prefill + decode
// logits match the CUDA full forward and the CPU session; chunked prefill and a mixed-length batch
// match too; a bf16 session (weights converted once) follows the bf16 full forward; the same seed
// gives the same samples.
#include <memory>
#include <string>

#include "autograd/tape.h"
#include "infer/session.h"
#include "tests/cuda/cuda_test_util.h"

namespace braid {
namespace {

using CudaSession = testing::CudaTest;
using infer::Session;
using infer::SessionOptions;
using testing::close_to_reference;
using testing::sample_ids;

constexpr int64_t kVocab = 97;

const char* const kFamilies[] = {"llama",      "swa-1to5",   "mamba",      "inter-1to1",
                                 "inter-1to3", "inter-1to5", "inter-1to12", "intra-1to1",
                                 "intra-1to5", "hymba-like", "falconh1-like"};

std::unique_ptr<HybridLM> build(const std::string& family, bool moe, Device device, DType activations) {
  ModelConfig config = load_model_config("configs/models/tiny/" + family + ".json");
  config.vocab_size = kVocab;
  config.init_std = 0.1;
  if (moe) config.ffn.kind = FfnConfig::Kind::moe;
  auto model = std::make_unique<HybridLM>(config, TensorOptions{device, DType::f32});
  Generator generator(family.size() * 31 + (moe ? 7 : 0));
  model->initialize(generator);
  model->set_activation_dtype(activations);
  return model;
}

// Full-forward logits of one sequence at `position`, as doubles.
std::vector<double> forward_row(const HybridLM& model, const std::vector<uint32_t>& tokens, size_t position) {
  autograd::NoGradScope no_grad;
  std::vector<double> ids(tokens.begin(), tokens.end());
  Tensor ids_tensor = Tensor::from_values(ids, {1, int64_t(ids.size())}, DType::i32).to(model.device());
  Tensor logits = model.logits(autograd::leaf(ids_tensor))->value;
  return logits.select(1, int64_t(position)).to(Device::cpu()).to(DType::f32).to_doubles();
}

std::vector<double> row_of(const Tensor& logits, int64_t row) {
  return logits.narrow(0, row, 1).to(Device::cpu()).to_doubles();
}

// Runs prompts through a session (prefill + `steps` decodes of fixed tokens); returns every step's
// logits on the host and the full token sequences.
struct SessionRun {
  std::vector<Tensor> logits;
  std::vector<std::vector<uint32_t>> sequences;
};
SessionRun run_session(const HybridLM& model, const std::vector<std::vector<uint32_t>>& prompts, int64_t steps, int64_t chunk) {
  SessionOptions options;
  options.batch = int64_t(prompts.size());
  options.max_length = 48;
  options.prefill_chunk = chunk;
  options.cuda_graph = false;
  Session session(model, options);
  SessionRun run{{session.prefill(prompts).to(Device::cpu())}, prompts};
  for (int64_t step = 0; step < steps; ++step) {
    std::vector<uint32_t> tokens;
    for (size_t b = 0; b < prompts.size(); ++b) {
      tokens.push_back(sample_ids(1, kVocab, 1000 + uint64_t(step) * 7 + b)[0]);
      run.sequences[b].push_back(tokens.back());
    }
    run.logits.push_back(session.decode(tokens).to(Device::cpu()));
  }
  return run;
}

// Each row of `run` against the full forward of its sequence alone on `model`.
void expect_matches_forward(const HybridLM& model, const SessionRun& run, const std::vector<std::vector<uint32_t>>& prompts,
                            double rtol) {
  for (size_t b = 0; b < prompts.size(); ++b)
    for (size_t step = 0; step < run.logits.size(); ++step) {
      const size_t position = prompts[b].size() - 1 + step;
      EXPECT_TRUE(close_to_reference(row_of(run.logits[step], int64_t(b)),
                                     forward_row(model, run.sequences[b], position), rtol))
          << model.config().name << " sequence " << b << " position " << position;
    }
}

TEST_F(CudaSession, Fp32MatchesFullForwardAndCpuSessionEveryFamily) {
  std::vector<std::pair<std::string, bool>> models;
  for (const char* family : kFamilies) models.emplace_back(family, false);
  models.emplace_back("inter-1to5", true);
  models.emplace_back("intra-1to5", true);
  const std::vector<std::vector<uint32_t>> prompts = {sample_ids(37, kVocab, 1)};
  for (const auto& [family, moe] : models) {
    SCOPED_TRACE(family + (moe ? " moe" : ""));
    auto gpu = build(family, moe, Device::cuda(0), DType::f32);
    auto cpu = build(family, moe, Device::cpu(), DType::f32);
    const SessionRun gpu_run = run_session(*gpu, prompts, 6, 0);
    expect_matches_forward(*gpu, gpu_run, prompts, 1e-5);
    const SessionRun cpu_run = run_session(*cpu, prompts, 6, 0);
    for (size_t step = 0; step < gpu_run.logits.size(); ++step)
      EXPECT_TRUE(close_to_reference(gpu_run.logits[step].to_doubles(), cpu_run.logits[step].to_doubles(), 1e-5));
    // Chunks of 10 continue from the caches (cache attention with several queries, scan and conv
    // from their states).
    expect_matches_forward(*gpu, run_session(*gpu, {sample_ids(41, kVocab, 2)}, 2, 10), {sample_ids(41, kVocab, 2)},
                           1e-5);
  }
}

TEST_F(CudaSession, MixedLengthBatchMatchesEachSequenceAlone) {
  for (const char* family : {"swa-1to5", "inter-1to5", "intra-1to5"}) {
    auto gpu = build(family, false, Device::cuda(0), DType::f32);
    const std::vector<std::vector<uint32_t>> prompts = {sample_ids(37, kVocab, 3), sample_ids(2, kVocab, 4),
                                                        sample_ids(20, kVocab, 5), sample_ids(9, kVocab, 6)};
    expect_matches_forward(*gpu, run_session(*gpu, prompts, 4, 0), prompts, 1e-5);
  }
}

// bf16 activations over fp32 master weights: the session converts the matrices to bf16 once; its
// logits follow the bf16 full forward within bf16 rounding.
TEST_F(CudaSession, Bf16FollowsBf16FullForward) {
  for (const char* family : {"llama", "intra-1to5", "swa-1to5"}) {
    auto gpu = build(family, false, Device::cuda(0), DType::bf16);
    const std::vector<std::vector<uint32_t>> prompts = {sample_ids(30, kVocab, 7), sample_ids(12, kVocab, 8)};
    expect_matches_forward(*gpu, run_session(*gpu, prompts, 3, 0), prompts, 3e-2);
  }
}

TEST_F(CudaSession, SameSeedSameSamples) {
  auto gpu = build("intra-1to5", false, Device::cuda(0), DType::f32);
  SamplingConfig sampling;
  sampling.temperature = 0.8;
  sampling.top_k = 30;
  sampling.top_p = 0.9;
  sampling.seed = 99;
  SessionOptions options;
  options.batch = 2;
  options.max_length = 32;
  Session session(*gpu, options);
  const std::vector<std::vector<uint32_t>> prompts = {sample_ids(10, kVocab, 9), sample_ids(4, kVocab, 10)};
  const auto first = session.generate(prompts, 12, sampling);
  EXPECT_EQ(first, session.generate(prompts, 12, sampling));
  EXPECT_EQ(first[0].size(), 12u);
}

}  // namespace
}  // namespace braid
