// The inference session (infer/session.h) on the CPU in fp32, for every tiny family preset and an
// MoE variant, against the full forward pass as the oracle: prefill then decode gives the logits of
// model.logits over the same tokens; chunked prefill, mixed-length batches and sampling agree with
// it too; cache memory follows MODEL.md section 7's formula; bad use raises one clear error.
#include <cmath>
#include <memory>

#include "autograd/tape.h"
#include "infer/session.h"
#include "layers/cost_model.h"
#include "tests/test_util.h"

namespace braid {
namespace {

using infer::Session;
using infer::SessionOptions;
using testing::all_close;
using testing::sample_ids;

constexpr int64_t kVocab = 97;

struct TinyModel {
  ModelConfig config;
  std::unique_ptr<HybridLM> model;
};

// A preset of configs/models/tiny/ with a small vocabulary and a larger init so every path carries
// signal; `moe` swaps the dense FFN for the MoE one.
TinyModel tiny_model(const std::string& family, bool moe = false) {
  TinyModel tiny;
  tiny.config = load_model_config("configs/models/tiny/" + family + ".json");
  tiny.config.vocab_size = kVocab;
  tiny.config.init_std = 0.1;
  if (moe) tiny.config.ffn.kind = FfnConfig::Kind::moe;
  tiny.model = std::make_unique<HybridLM>(tiny.config, TensorOptions{});
  Generator generator(family.size() * 31 + (moe ? 7 : 0));
  tiny.model->initialize(generator);
  return tiny;
}

const std::vector<std::string>& families() {
  static const std::vector<std::string> names = {"llama", "mamba", "swa-1to5", "inter-1to1", "inter-1to3",
                                                 "inter-1to5", "inter-1to12", "intra-1to1", "intra-1to5",
                                                 "hymba-like", "falconh1-like"};
  return names;
}

// Full-forward logits (T, vocab) of one sequence.
std::vector<std::vector<double>> full_logits(const HybridLM& model, const std::vector<uint32_t>& tokens) {
  autograd::NoGradScope no_grad;
  std::vector<double> ids(tokens.begin(), tokens.end());
  Tensor logits = model.logits(autograd::leaf(Tensor::from_values(ids, {1, int64_t(ids.size())}, DType::i32)))->value;
  std::vector<double> flat = logits.to_doubles();
  std::vector<std::vector<double>> rows;
  for (size_t t = 0; t < tokens.size(); ++t)
    rows.emplace_back(flat.begin() + long(t * kVocab), flat.begin() + long((t + 1) * kVocab));
  return rows;
}

std::vector<double> row_of(const Tensor& logits, int64_t row) {
  return logits.narrow(0, row, 1).to_doubles();
}

// fp32 agreement relative to the row's scale (the chunked scan and the recurrence sum in other orders).
::testing::AssertionResult close_row(const std::vector<double>& actual, const std::vector<double>& expected) {
  double scale = 0;
  for (double value : expected) scale = std::max(scale, std::abs(value));
  return all_close(actual, expected, 1e-5, 1e-5 * scale);
}

// Prefills `prompts` (chunked when `chunk` > 0), decodes `steps` tokens per sequence, and checks
// every logits row against the full forward of that sequence alone.
void expect_session_matches_forward(const TinyModel& tiny, const std::vector<std::vector<uint32_t>>& prompts,
                                    int64_t steps, int64_t chunk, uint64_t seed) {
  SessionOptions options;
  options.batch = int64_t(prompts.size());
  options.max_length = 48;
  options.prefill_chunk = chunk;
  Session session(*tiny.model, options);
  std::vector<std::vector<uint32_t>> sequences = prompts;
  std::vector<std::vector<uint32_t>> next(prompts.size());
  for (size_t b = 0; b < prompts.size(); ++b) next[b] = sample_ids(size_t(steps), kVocab, seed + b);
  std::vector<Tensor> outputs = {session.prefill(prompts)};
  for (int64_t step = 0; step < steps; ++step) {
    std::vector<uint32_t> tokens;
    for (size_t b = 0; b < prompts.size(); ++b) {
      tokens.push_back(next[b][size_t(step)]);
      sequences[b].push_back(tokens.back());
    }
    outputs.push_back(session.decode(tokens));
  }
  for (size_t b = 0; b < prompts.size(); ++b) {
    EXPECT_EQ(session.length(int64_t(b)), int64_t(prompts[b].size()) + steps);
    const auto reference = full_logits(*tiny.model, sequences[b]);
    for (int64_t step = 0; step <= steps; ++step) {
      const size_t position = prompts[b].size() - 1 + size_t(step);
      EXPECT_TRUE(close_row(row_of(outputs[size_t(step)], int64_t(b)), reference[position]))
          << tiny.config.name << " sequence " << b << " position " << position << " chunk " << chunk;
    }
  }
}

// Prompt 37 crosses the tiny presets' SSD chunk (32) and, with the decoded tokens, the SWA cache of
// sink 4 + window 32 (so the ring wraps).
TEST(InferSession, PrefillThenDecodeMatchesFullForwardEveryFamily) {
  for (const std::string& family : families()) {
    const TinyModel tiny = tiny_model(family);
    expect_session_matches_forward(tiny, {sample_ids(37, kVocab, 11)}, 4, 0, 100);
  }
  expect_session_matches_forward(tiny_model("intra-1to5", true), {sample_ids(37, kVocab, 12)}, 6, 0, 200);
  expect_session_matches_forward(tiny_model("inter-1to5", true), {sample_ids(37, kVocab, 13)}, 6, 0, 300);
}

// Chunks of 10 split the SSD chunks and the window at odd places; a chunk of 1 is decode-like.
TEST(InferSession, ChunkedPrefillMatchesFullForward) {
  for (const std::string& family : families()) {
    const TinyModel tiny = tiny_model(family);
    expect_session_matches_forward(tiny, {sample_ids(41, kVocab, 21)}, 2, 10, 400);
  }
  expect_session_matches_forward(tiny_model("swa-1to5"), {sample_ids(14, kVocab, 22)}, 1, 1, 500);
  expect_session_matches_forward(tiny_model("intra-1to5", true), {sample_ids(30, kVocab, 23)}, 1, 7, 600);
}

// Each sequence of a batch with different prompt lengths gets the logits of that sequence alone.
TEST(InferSession, MixedLengthBatchMatchesEachSequenceAlone) {
  for (const char* family : {"swa-1to5", "inter-1to5", "intra-1to5"}) {
    const TinyModel tiny = tiny_model(family);
    expect_session_matches_forward(tiny, {sample_ids(37, kVocab, 31), sample_ids(3, kVocab, 32),
                                          sample_ids(20, kVocab, 33)}, 3, 0, 700);
  }
  expect_session_matches_forward(tiny_model("intra-1to1", true), {sample_ids(1, kVocab, 34), sample_ids(9, kVocab, 35)},
                                 4, 4, 800);
}

// Same seed, same tokens; and the tokens are those of the reference generation loop over the full
// forward (layers/sampling.h), which draws from the same Philox positions.
TEST(InferSession, GenerateIsSeededAndMatchesReferenceSampling) {
  const TinyModel tiny = tiny_model("intra-1to5");
  SamplingConfig sampling;
  sampling.temperature = 0.9;
  sampling.top_k = 40;
  sampling.top_p = 0.95;
  sampling.seed = 1234;
  const std::vector<std::vector<uint32_t>> prompts = {sample_ids(12, kVocab, 41), sample_ids(5, kVocab, 42)};
  SessionOptions options;
  options.batch = 2;
  options.max_length = 24;
  Session session(*tiny.model, options);
  std::vector<std::vector<uint32_t>> streamed(2);
  const auto first = session.generate(prompts, 8, sampling, [&](int64_t b, uint32_t token) {
    streamed[size_t(b)].push_back(token);
  });
  const auto second = session.generate(prompts, 8, sampling);
  EXPECT_EQ(first, second);
  EXPECT_EQ(first, streamed);
  for (size_t b = 0; b < prompts.size(); ++b) {
    std::vector<uint32_t> reference = generate(*tiny.model, prompts[b], 8, 64, sampling);
    EXPECT_EQ(std::vector<uint32_t>(reference.begin() + long(prompts[b].size()), reference.end()), first[b]);
  }
  EXPECT_EQ(session.length(0), 12 + 7);  // the last sampled token is never decoded
}

// cache_bytes against MODEL.md section 7 (layers/cost_model.h counts it for bf16). At fp32 every
// element takes 4 bytes, twice the formula's 2, except that we keep W-1 conv inputs per channel where
// the formula counts W (mamba_ssm's conv state), so one conv slot per Mamba part is subtracted. The
// SSM state is fp32 on every backend (the formula counts it in bf16; at fp32 the two agree).
TEST(InferSession, CacheBytesFollowTheCostFormula) {
  for (const std::string& family : families()) {
    const TinyModel tiny = tiny_model(family);
    const ModelConfig& c = tiny.config;
    SessionOptions options;
    options.batch = 3;
    options.max_length = 50;
    Session session(*tiny.model, options);
    double conv_slot = 0;  // bytes of one conv input per channel, over every Mamba part
    double expected = 0;   // the layout, counted independently
    for (char kind : c.pattern) {
      const int64_t span = kind == 'W' ? std::min<int64_t>(50, c.sliding_window.window + c.sliding_window.sink) : 50;
      if (kind == 'T' || kind == 'W') expected += 2.0 * c.attention.n_kv_heads * c.attention.head_dim * span * 4;
      if (kind == 'H')
        expected += double(c.intra.n_kv_heads) * double(c.intra.qk_dim + c.intra.v_dim) / double(c.intra.n_heads) * 50 * 4;
      if (kind == 'M' || kind == 'H') {
        const int64_t di = kind == 'M' ? c.mamba.d_ssm : c.intra.d_ssm;
        const int64_t n = kind == 'M' ? c.mamba.d_state : c.intra.d_state;
        const int64_t channels = di + 2 * c.mamba.n_groups * n;
        expected += double(di * n) * 4 + double(channels * (c.mamba.conv_width - 1)) * 4;
        conv_slot += double(channels) * 4;
      }
    }
    EXPECT_EQ(double(session.cache_bytes()), expected * 3) << family;
    EXPECT_EQ(double(session.cache_bytes()), (model_cost(c, 50).cache_bytes * 2 - conv_slot) * 3) << family;
  }
}

TEST(InferSession, RejectsBadUse) {
  const TinyModel tiny = tiny_model("inter-1to5");
  SessionOptions options;
  options.batch = 2;
  options.max_length = 8;
  Session session(*tiny.model, options);
  EXPECT_NE(testing::error_of([&] { session.decode({1, 2}); }).find("before prefill"), std::string::npos);
  EXPECT_NE(testing::error_of([&] { session.prefill({sample_ids(9, kVocab, 1), sample_ids(2, kVocab, 2)}); })
                .find("max_length"),
            std::string::npos);
  EXPECT_NE(testing::error_of([&] { session.prefill({sample_ids(3, kVocab, 1)}); }).find("batch 2"), std::string::npos);
  session.prefill({sample_ids(7, kVocab, 3), sample_ids(2, kVocab, 4)});
  session.decode({5, 6});  // sequence 0 now holds 8 = max_length tokens
  EXPECT_NE(testing::error_of([&] { session.decode({5, 6}); }).find("max_length"), std::string::npos);
  EXPECT_NE(testing::error_of([&] { session.generate({sample_ids(4, kVocab, 5), sample_ids(4, kVocab, 6)}, 5, {}); })
                .find("max_length"),
            std::string::npos);
}

}  // namespace
}  // namespace braid
