// The CUDA-graph decode step (SessionOptions::cuda_graph): for every tiny family, dense and with the
// MoE FFN (whose decode step weights every expert by dense gates), the step is captured and fp32
// sessions with and without the graph give bit-identical logits over several steps of a
// mixed-length batch, and generate the same tokens; the step is really replayed (a decode step then
// allocates only its ids and the returned copy of the logits, where an eager step allocates every
// intermediate).
#include <memory>
#include <string>
#include <utility>

#include "infer/session.h"
#include "runtime/allocator.h"
#include "runtime/cuda_stream.h"
#include "tests/cuda/cuda_test_util.h"

namespace braid {
namespace {

using CudaDecodeGraph = testing::CudaTest;
using testing::sample_ids;

constexpr int64_t kVocab = 89;

std::unique_ptr<HybridLM> tiny_model(const std::string& family, bool moe) {
  ModelConfig config = load_model_config("configs/models/tiny/" + family + ".json");
  config.vocab_size = kVocab;
  config.init_std = 0.1;
  if (moe) config.ffn.kind = FfnConfig::Kind::moe;
  auto model = std::make_unique<HybridLM>(config, TensorOptions{Device::cuda(0), DType::f32});
  Generator generator(family.size() * 13 + (moe ? 5 : 0));
  model->initialize(generator);
  return model;
}

infer::SessionOptions options_with(bool graph) {
  infer::SessionOptions options;
  options.batch = 3;
  options.max_length = 40;
  options.cuda_graph = graph;
  return options;
}

const std::vector<std::vector<uint32_t>> kPrompts = {sample_ids(11, kVocab, 1), sample_ids(4, kVocab, 2),
                                                     sample_ids(17, kVocab, 3)};

struct DecodeRun {
  std::vector<std::vector<double>> logits;  // every step's, on the host
  bool captured = false;                    // the session replayed a captured graph
};

// Prefill then `steps` decodes of fixed tokens.
DecodeRun run(const HybridLM& model, bool graph, int64_t steps) {
  infer::Session session(model, options_with(graph));
  DecodeRun result;
  result.logits = {session.prefill(kPrompts).to(Device::cpu()).to_doubles()};
  for (int64_t step = 0; step < steps; ++step) {
    std::vector<uint32_t> tokens;
    for (size_t b = 0; b < kPrompts.size(); ++b) tokens.push_back(sample_ids(1, kVocab, 50 + uint64_t(step) * 3 + b)[0]);
    result.logits.push_back(session.decode(tokens).to(Device::cpu()).to_doubles());
  }
  result.captured = session.decode_graph_captured();
  return result;
}

TEST_F(CudaDecodeGraph, ReplayEqualsEagerStepEveryFamily) {
  const char* const families[] = {"llama",      "swa-1to5",   "mamba",       "inter-1to1", "inter-1to3",
                                  "inter-1to5", "inter-1to12", "intra-1to1", "intra-1to5", "hymba-like",
                                  "falconh1-like"};
  for (const char* family : families) {
    for (bool moe : {false, true}) {
      const std::string name = family;
      if (moe && name != "llama" && name != "inter-1to5" && name != "intra-1to5") continue;
      SCOPED_TRACE(name + (moe ? " moe" : ""));
      const auto model = tiny_model(family, moe);
      const DecodeRun eager = run(*model, false, 5), graph = run(*model, true, 5);
      EXPECT_FALSE(eager.captured);
      EXPECT_TRUE(graph.captured) << "the decode step fell back to eager steps";
      ASSERT_EQ(graph.logits.size(), eager.logits.size());
      for (size_t step = 0; step < eager.logits.size(); ++step)
        EXPECT_EQ(graph.logits[step], eager.logits[step]) << "step " << step;
    }
  }
}

TEST_F(CudaDecodeGraph, GenerateWithGraphEqualsWithout) {
  const auto model = tiny_model("intra-1to5", false);
  SamplingConfig sampling;
  sampling.temperature = 0.9;
  sampling.top_k = 20;
  sampling.top_p = 0.95;
  sampling.seed = 5;
  infer::Session eager(*model, options_with(false)), graph(*model, options_with(true));
  const auto want = eager.generate(kPrompts, 12, sampling);
  EXPECT_EQ(graph.generate(kPrompts, 12, sampling), want);
  EXPECT_EQ(graph.generate(kPrompts, 12, sampling), want);  // the same graph, a fresh prefill
}

TEST_F(CudaDecodeGraph, StepIsReplayedNotRunEagerly) {
  for (auto [family, moe] : {std::pair{"llama", false}, std::pair{"mamba", false}, std::pair{"intra-1to5", false},
                             std::pair{"inter-1to5", true}, std::pair{"intra-1to5", true}}) {
    SCOPED_TRACE(std::string(family) + (moe ? " moe" : ""));
    const auto model = tiny_model(family, moe);
    infer::Session session(*model, options_with(true));
    session.prefill(kPrompts);
    const std::vector<uint32_t> tokens = {1, 2, 3};
    session.decode(tokens);  // records the graph, then replays it
    ASSERT_TRUE(session.decode_graph_captured());
    Allocator& memory = cuda_allocator(0);
    const uint64_t before = memory.stats().allocations;
    session.decode(tokens);
    // The uploaded ids and the returned logits; an eager step allocates every intermediate.
    EXPECT_LE(memory.stats().allocations - before, 2u);
  }
}

// CapturedGraph alone: a replay recomputes from the fixed input's current values; memory the
// recording freed stays the graph's (an allocation outside gets other addresses); work that reads
// the device on the host cannot be captured, is reported as such, and leaves CUDA usable.
TEST_F(CudaDecodeGraph, CapturedGraphReplaysAndKeepsItsMemory) {
  const int64_t n = 3001;
  Tensor input = Tensor::empty({n}, DType::f32, Device::cuda(0));
  Tensor output = Tensor::empty({n}, DType::f32, Device::cuda(0));
  const void* scratch = nullptr;
  CapturedGraph graph;
  ASSERT_TRUE(graph.capture([&] {
    const Tensor rounded = input.to(DType::bf16);  // allocated and freed while recording
    scratch = rounded.raw_data();
    output.copy_from(rounded.to(DType::f32));
  }));
  ASSERT_TRUE(graph.captured());
  for (uint64_t seed : {1u, 2u}) {
    const Tensor values = testing::random_normal({n}, seed, DType::f32);
    input.copy_from(values);
    graph.replay();
    EXPECT_EQ(output.to(Device::cpu()).to_doubles(), values.to(DType::bf16).to(DType::f32).to_doubles());
    const Tensor outside = Tensor::empty({n}, DType::bf16, Device::cuda(0));
    EXPECT_NE(outside.raw_data(), scratch);
  }

  CapturedGraph host_read;
  EXPECT_FALSE(host_read.capture([&] { output.copy_from(input.to(Device::cpu()).to(Device::cuda(0))); }));
  EXPECT_FALSE(host_read.captured());
  const Tensor values = testing::random_normal({n}, 3, DType::f32);  // CUDA (and the first graph) still work
  input.copy_from(values);
  graph.replay();
  EXPECT_EQ(output.to(Device::cpu()).to_doubles(), values.to(DType::bf16).to(DType::f32).to_doubles());
}

}  // namespace
}  // namespace braid
