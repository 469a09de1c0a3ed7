// build/infer end to end on a micro checkpoint made by build/train: --help of every subcommand,
// ppl against the trainer's own validation loss, greedy generate against the full-forward reference
// generator, mc and niah results consistent with their per-item numbers, bench's cache size against
// the cost formula, and one clear error line with exit code 1 for each kind of bad input.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "infer/model_loader.h"
#include "layers/cost_model.h"
#include "layers/sampling.h"
#include "runtime/token_shard.h"
#include "tests/run_command.h"
#include "tools/tokenizer.h"

namespace braid {
namespace {

namespace fs = std::filesystem;

using testing::Outcome;
using testing::run_command;

// The last line of the output that starts with "error: ".
std::string error_line(const std::string& output) {
  std::string last;
  std::istringstream lines(output);
  for (std::string line; std::getline(lines, line);)
    if (line.rfind("error: ", 0) == 0) last = line;
  return last;
}

const char* kText =
    "The river runs past green hills. Old stone walls stand near the small town. Birds sing over quiet "
    "fields of grass, and the wind moves the tall trees. ";

// One micro checkpoint shared by every test (training it is the slow part).
class InferCli : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    const fs::path bin = fs::read_symlink("/proc/self/exe").parent_path().parent_path();
    infer_ = bin / "infer";
    train_ = bin / "train";
    if (!fs::exists(infer_) || !fs::exists(train_)) return;
    dir_ = fs::temp_directory_path() / ("braid_infer_cli_" + std::to_string(::getpid()));
    fs::remove_all(dir_);
    fs::create_directories(dir_);
    // A byte-level tokenizer (token i = byte i, <|endoftext|> = 256) and a micro hybrid over it.
    std::vector<std::string> bytes;
    for (int b = 0; b < 256; ++b) bytes.emplace_back(1, char(b));
    Tokenizer::from_ranks(bytes, {{"<|endoftext|>", 256}}).save((dir_ / "tokenizer.txt").string());
    std::ofstream(dir_ / "model.json") << R"({
      "name": "micro", "vocab_size": 257, "d_model": 16, "pattern": "MTH",
      "attention": {"n_heads": 2, "n_kv_heads": 1, "head_dim": 8},
      "mamba": {"d_ssm": 32, "head_dim": 8, "d_state": 4, "chunk": 8},
      "intra": {"n_heads": 2, "n_kv_heads": 1, "qk_dim": 8, "v_dim": 16, "d_ssm": 16,
                "mamba_head_dim": 8, "d_state": 4},
      "ffn": {"d_ffn": 32}})";
    std::string corpus;
    for (int i = 0; i < 20; ++i) corpus += kText;
    std::ofstream(dir_ / "text.txt") << corpus;
    const Tokenizer tokenizer = Tokenizer::load((dir_ / "tokenizer.txt").string());
    write_token_shard((dir_ / "train.bin").string(), tokenizer.encode(corpus));
    write_token_shard((dir_ / "val.bin").string(), tokenizer.encode(corpus.substr(7, 1500)));
    const Outcome trained = run_command(
        train_.string() + " --model " + (dir_ / "model.json").string() + " --data " + (dir_ / "train.bin").string() +
        " --val " + (dir_ / "val.bin").string() + " --tokenizer " + (dir_ / "tokenizer.txt").string() +
        " --seq-len 16 --micro-batch 4 --steps 40 --lr 1e-2 --eval-every 0 --out " + (dir_ / "run").string() + " 2>&1");
    ASSERT_EQ(trained.exit_code, 0) << trained.output;
  }
  static void TearDownTestSuite() {
    if (!dir_.empty()) fs::remove_all(dir_);
  }
  void SetUp() override {
    if (!fs::exists(infer_) || !fs::exists(train_)) GTEST_SKIP() << infer_ << " or " << train_ << " is not built";
  }

  static Outcome infer(const std::string& arguments, bool with_stderr = true) {
    return run_command(infer_.string() + " " + arguments + (with_stderr ? " 2>&1" : " 2>/dev/null"));
  }
  static nlohmann::json infer_json(const std::string& arguments) {
    const Outcome outcome = infer(arguments + " --json -", false);
    EXPECT_EQ(outcome.exit_code, 0) << arguments << "\n" << infer(arguments).output;
    return nlohmann::json::parse(outcome.output, nullptr, false);
  }
  static std::string checkpoint() { return " --checkpoint " + (dir_ / "run").string(); }
  static std::string path(const std::string& name) { return (dir_ / name).string(); }

  static inline fs::path infer_, train_, dir_;
};

TEST_F(InferCli, EverySubcommandHasHelp) {
  const Outcome top = infer("--help");
  EXPECT_EQ(top.exit_code, 0);
  for (const char* command : {"generate", "ppl", "mc", "niah", "bench"}) {
    EXPECT_NE(top.output.find(command), std::string::npos) << top.output;
    const Outcome help = infer(std::string(command) + " --help");
    EXPECT_EQ(help.exit_code, 0) << command;
    for (const char* option : {"--checkpoint", "--preset", "--device", "--dtype", "--json"})
      EXPECT_NE(help.output.find(option), std::string::npos) << command << " lacks " << option << "\n" << help.output;
  }
  EXPECT_NE(infer("niah --help").output.find("--depths"), std::string::npos);
  EXPECT_NE(infer("generate --help").output.find("--top-p"), std::string::npos);
  EXPECT_NE(infer("").exit_code, 0);  // a subcommand is required
}

TEST_F(InferCli, PplEqualsTheTrainersValidationLoss) {
  // The trainer's final evaluation: 8 batches of 4 rows of 16 from val.bin in file order.
  double val_loss = NAN;
  std::ifstream metrics(dir_ / "run" / "metrics.jsonl");
  for (std::string line; std::getline(metrics, line);) {
    const nlohmann::json entry = nlohmann::json::parse(line);
    if (entry.contains("val_loss")) val_loss = entry["val_loss"].get<double>();
  }
  ASSERT_TRUE(std::isfinite(val_loss));
  const nlohmann::json result =
      infer_json("ppl" + checkpoint() + " --data " + path("val.bin") + " --context 16 --batch 3 --bucket 6 --max-tokens 512");
  ASSERT_FALSE(result.is_discarded());
  EXPECT_EQ(result["tokens"], 512);
  EXPECT_EQ(result["train_seq_len"], 16);
  EXPECT_NEAR(result["nll"].get<double>(), val_loss, 1e-5 * val_loss);
  EXPECT_NEAR(result["perplexity"].get<double>(), std::exp(val_loss), 1e-4 * std::exp(val_loss));
  // Buckets of 6 positions: 0-5, 6-11, 12-17 (the last holds 4 positions a window), weighted back
  // to the mean.
  ASSERT_EQ(result["positions"].size(), 3u);
  double weighted = 0;
  int64_t count = 0;
  for (const nlohmann::json& bucket : result["positions"]) {
    weighted += bucket["nll"].get<double>() * bucket["count"].get<double>();
    count += bucket["count"].get<int64_t>();
  }
  EXPECT_EQ(result["positions"][2]["count"], 32 * 4);
  EXPECT_EQ(count, 512);
  EXPECT_NEAR(weighted / double(count), val_loss, 1e-5 * val_loss);
}

TEST_F(InferCli, PplOnTextScoresEveryByte) {
  const nlohmann::json result = infer_json("ppl" + checkpoint() + " --text " + path("text.txt") + " --context 64 --bucket 8");
  // A begin-of-document token, then one target per byte.
  EXPECT_EQ(result["tokens"].get<int64_t>(), int64_t(fs::file_size(dir_ / "text.txt")));
  EXPECT_GT(result["nll"].get<double>(), 0.0);
  EXPECT_LT(result["nll"].get<double>(), std::log(257.0));  // trained: better than uniform
  // Positions past the training length (16) are flagged.
  EXPECT_EQ(result["positions"][0]["past_training_length"], false);
  EXPECT_EQ(result["positions"].back()["past_training_length"], true);
}

TEST_F(InferCli, GreedyGenerateEqualsTheFullForwardReference) {
  const nlohmann::json result = infer_json("generate" + checkpoint() +
                                           " --prompt 'The river' --max-new-tokens 12 --temperature 0");
  ASSERT_FALSE(result.is_discarded());
  const std::vector<uint32_t> tokens = result["outputs"][0]["tokens"].get<std::vector<uint32_t>>();
  // The oracle: layers/sampling.h's generator re-running the whole forward pass each step.
  infer::LoadedModel loaded = infer::load_model({path("run"), "", 0, "cpu", ""});
  const Tokenizer tokenizer = Tokenizer::load(path("tokenizer.txt"));
  std::vector<uint32_t> prompt = {tokenizer.bos_id()};
  for (uint32_t id : tokenizer.encode("The river")) prompt.push_back(id);
  SamplingConfig greedy;
  greedy.temperature = 0;
  const std::vector<uint32_t> full = generate(*loaded.model, prompt, 12, 64, greedy);
  EXPECT_EQ(tokens, std::vector<uint32_t>(full.begin() + long(prompt.size()), full.end()));
  EXPECT_EQ(result["outputs"][0]["completion"], tokenizer.decode(tokens));
}

TEST_F(InferCli, SampledGenerateRepeatsWithTheSeedAndStreams) {
  const std::string command = "generate" + checkpoint() +
                              " --prompt 'Birds' --prompt 'Old stone' --max-new-tokens 20 --temperature 1.0 --top-k 20 --top-p 0.9 --seed 5";
  const Outcome first = infer(command, false), second = infer(command, false);
  ASSERT_EQ(first.exit_code, 0) << infer(command).output;
  EXPECT_EQ(first.output, second.output);
  // Streamed text: each prompt, its continuation, a newline.
  std::istringstream lines(first.output);
  std::string line;
  std::getline(lines, line);
  EXPECT_EQ(line.rfind("Birds", 0), 0u) << first.output;
  std::getline(lines, line);
  EXPECT_EQ(line.rfind("Old stone", 0), 0u) << first.output;
}

TEST_F(InferCli, MultipleChoiceAgreesWithItsScores) {
  std::ofstream(dir_ / "mc.jsonl") << R"({"context": "The river runs past green", "choices": [" hills.", " zqxjv!", " qqq"], "gold": 0})"
                                   << "\n\n"
                                   << R"({"context": "Birds sing over quiet ", "choices": ["fields", "xylophones"], "gold": 0})" << "\n"
                                   << R"({"context": "", "choices": ["The wind", "Zq"], "gold": 1})" << "\n";
  const nlohmann::json result = infer_json("mc" + checkpoint() + " --data " + path("mc.jsonl") + " --batch 2");
  ASSERT_FALSE(result.is_discarded());
  ASSERT_EQ(result["items"], 3);
  const std::vector<int64_t> lines = {1, 3, 4};
  const std::vector<std::vector<int64_t>> bytes = {{7, 7, 4}, {6, 10}, {8, 2}};
  int64_t correct = 0, correct_norm = 0;
  for (size_t i = 0; i < 3; ++i) {
    const nlohmann::json& item = result["per_item"][i];
    EXPECT_EQ(item["line"], lines[i]);
    const std::vector<double> ll = item["loglikelihoods"].get<std::vector<double>>();
    size_t best = 0, best_norm = 0;
    for (size_t c = 0; c < ll.size(); ++c) {
      EXPECT_LT(ll[c], 0.0);
      if (ll[c] > ll[best]) best = c;
      if (ll[c] / double(bytes[i][c]) > ll[best_norm] / double(bytes[i][best_norm])) best_norm = c;
    }
    EXPECT_EQ(item["predicted"], best);
    EXPECT_EQ(item["predicted_norm"], best_norm);
    correct += int64_t(best) == item["gold"].get<int64_t>();
    correct_norm += int64_t(best_norm) == item["gold"].get<int64_t>();
  }
  EXPECT_DOUBLE_EQ(result["acc"].get<double>(), double(correct) / 3);
  EXPECT_DOUBLE_EQ(result["acc_norm"].get<double>(), double(correct_norm) / 3);
  // The trained model prefers the corpus's own word to gibberish of the same length.
  const std::vector<double> first = result["per_item"][0]["loglikelihoods"].get<std::vector<double>>();
  EXPECT_GT(first[0], first[1]);
}

TEST_F(InferCli, NiahWritesTheGrid) {
  const nlohmann::json result = infer_json("niah" + checkpoint() + " --haystack " + path("text.txt") +
                                           " --lengths 200,260 --depths 0,0.5,1 --trials 2 --batch 2 --answer-tokens 9");
  ASSERT_FALSE(result.is_discarded());
  ASSERT_EQ(result["grid"].size(), 6u);
  int64_t correct = 0;
  for (size_t i = 0; i < 6; ++i) {
    const nlohmann::json& cell = result["grid"][i];
    EXPECT_EQ(cell["length"], i < 3 ? 200 : 260);
    EXPECT_EQ(cell["trials"], 2);
    EXPECT_DOUBLE_EQ(cell["accuracy"].get<double>(), cell["correct"].get<double>() / 2);
    correct += cell["correct"].get<int64_t>();
  }
  EXPECT_DOUBLE_EQ(result["accuracy"].get<double>(), double(correct) / 12);
  const Outcome table = infer("niah" + checkpoint() + " --haystack " + path("text.txt") +
                              " --lengths 200 --depths 0,1 --trials 1 --answer-tokens 2", false);
  EXPECT_EQ(table.exit_code, 0);
  EXPECT_NE(table.output.find("length \\ depth"), std::string::npos) << table.output;
}

TEST_F(InferCli, BenchOnAPresetReportsSaneNumbers) {
  // Attention only, so the cache is exactly the cost formula's (bf16 figure x 2 for fp32, x batch).
  std::ofstream(dir_ / "bench.json") << R"({"name": "bench-micro", "vocab_size": 64, "d_model": 16, "pattern": "TT",
      "attention": {"n_heads": 2, "n_kv_heads": 1, "head_dim": 8}, "ffn": {"d_ffn": 32}})";
  const nlohmann::json result =
      infer_json("bench --preset " + path("bench.json") + " --batch 3 --prompt 8 --totals 24,40");
  ASSERT_FALSE(result.is_discarded());
  ASSERT_EQ(result["results"].size(), 2u);
  const ModelConfig config = load_model_config(path("bench.json"));
  for (size_t i = 0; i < 2; ++i) {
    const nlohmann::json& row = result["results"][i];
    const int64_t total = i == 0 ? 24 : 40;
    EXPECT_EQ(row["total"], total);
    EXPECT_EQ(row["decode_steps"], total - 8);
    EXPECT_GT(row["decode_tokens_per_s"].get<double>(), 0.0);
    EXPECT_GT(row["prefill_tokens_per_s"].get<double>(), 0.0);
    EXPECT_NEAR(row["ms_per_step"].get<double>() * 1e-3 * row["decode_tokens_per_s"].get<double>(), 3.0, 1e-6);
    EXPECT_DOUBLE_EQ(row["cache_mib"].get<double>() * (1 << 20), 2 * 3 * model_cost(config, total).cache_bytes);
    EXPECT_GE(row["peak_mib"].get<double>(), row["cache_mib"].get<double>());
  }
}

TEST_F(InferCli, BadInputIsOneErrorLine) {
  auto expect_error = [](const Outcome& outcome, const std::string& expected) {
    EXPECT_EQ(outcome.exit_code, 1) << outcome.output;
    const std::string line = error_line(outcome.output);
    EXPECT_NE(line.find(expected), std::string::npos) << "expected \"" << expected << "\" in:\n" << outcome.output;
  };
  expect_error(infer("ppl" + checkpoint() + " --data " + path("val.bin") + " --contxt 16"), "--contxt");
  expect_error(infer("mc" + checkpoint()), "--data is required");
  expect_error(infer("ppl --checkpoint " + path("nowhere") + " --data " + path("val.bin")), "nowhere");
  fs::create_directories(dir_ / "empty_run");
  expect_error(infer("ppl --checkpoint " + path("empty_run") + " --data " + path("val.bin")), "no complete checkpoint");
  expect_error(infer("ppl" + checkpoint() + " --preset " + path("model.json") + " --data " + path("val.bin")),
               "exactly one of --checkpoint");

  std::ofstream(dir_ / "bad.jsonl") << R"({"context": "a", "choices": ["b"], "gold": 0})" << "\n"
                                    << R"({"context": "a", "choices": ["b"], "gold": 0)" << "\n";
  expect_error(infer("mc" + checkpoint() + " --data " + path("bad.jsonl")), "bad.jsonl:2: ");

  expect_error(infer("generate" + checkpoint() + " --prompt 'a prompt far too long' --max-length 12 --max-new-tokens 4"),
               "--max-length 12");

  write_token_shard(path("big_ids.bin").c_str(), std::vector<uint32_t>(100, 350));
  expect_error(infer("ppl" + checkpoint() + " --data " + path("big_ids.bin") + " --context 16"), "350");

  expect_error(infer("ppl" + checkpoint() + " --data " + path("val.bin") + " --device cpu --dtype bf16"), "bf16");
}

}  // namespace
}  // namespace braid
