// build/train end to end on a micro model and synthetic shards: exact resume, and one clear error
// line with a non-zero exit (and existing checkpoints intact) for each kind of bad input.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "runtime/rng.h"
#include "runtime/safetensors.h"
#include "runtime/token_shard.h"
#include "tests/run_command.h"
#include "tests/train_runs.h"
#include "train/checkpoint.h"

namespace braid {
namespace {

namespace fs = std::filesystem;

using testing::Outcome;

class TrainCli : public ::testing::Test {
 protected:
  void SetUp() override {
    binary_ = fs::read_symlink("/proc/self/exe").parent_path().parent_path() / "train";
    if (!fs::exists(binary_)) GTEST_SKIP() << binary_ << " is not built";
    dir_ = fs::temp_directory_path() / ("braid_train_cli_" + std::to_string(::getpid()) + "_" +
                                        ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
    // A micro hybrid (T, M and H layers) over a 64-token vocabulary.
    std::ofstream(dir_ / "model.json") << R"({
      "name": "micro", "vocab_size": 64, "d_model": 16, "pattern": "MTH",
      "attention": {"n_heads": 2, "n_kv_heads": 1, "head_dim": 8},
      "mamba": {"d_ssm": 32, "head_dim": 8, "d_state": 4, "chunk": 8},
      "intra": {"n_heads": 2, "n_kv_heads": 1, "qk_dim": 8, "v_dim": 16, "d_ssm": 16,
                "mamba_head_dim": 8, "d_state": 4},
      "ffn": {"d_ffn": 32}})";
    testing::write_walk_shard(dir_ / "train.bin", 20000, 1);
    testing::write_walk_shard(dir_ / "val.bin", 2000, 2);
  }
  void TearDown() override {
    if (!dir_.empty()) fs::remove_all(dir_);
  }


  Outcome train(const std::string& arguments) {
    const std::string command = binary_.string() + " --model " + (dir_ / "model.json").string() + " --data " +
                                (dir_ / "train.bin").string() + " --val " + (dir_ / "val.bin").string() +
                                " --seq-len 16 --micro-batch 4 --lr 3e-3 --eval-every 0 " + arguments + " 2>&1";
    return testing::run_command(command);
  }

  static std::vector<double> losses(const fs::path& metrics) {
    std::vector<double> values;
    std::ifstream in(metrics);
    for (std::string line; std::getline(in, line);) {
      auto json = nlohmann::json::parse(line);
      if (json.contains("loss")) values.push_back(json["loss"].get<double>());
    }
    return values;
  }

  // The last line of the output that starts with "error: ".
  static std::string error_line(const std::string& output) {
    std::string last;
    std::istringstream lines(output);
    for (std::string line; std::getline(lines, line);)
      if (line.rfind("error: ", 0) == 0) last = line;
    return last;
  }

  fs::path binary_, dir_;
};

TEST_F(TrainCli, ResumeIsBitIdentical) {
  Outcome straight = train("--steps 8 --out " + (dir_ / "straight").string() + " --batch-tokens 128");
  ASSERT_EQ(straight.exit_code, 0) << straight.output;
  Outcome first = train("--steps 8 --checkpoint-every 4 --out " + (dir_ / "resumed").string() + " --batch-tokens 128");
  ASSERT_EQ(first.exit_code, 0) << first.output;
  // Drop the finished run's last checkpoint, then resume from step 4.
  fs::remove_all(dir_ / "resumed" / "step_00000008");
  Outcome resumed = train("--steps 8 --out " + (dir_ / "resumed").string() + " --batch-tokens 128 --resume " +
                          (dir_ / "resumed" / "step_00000004").string());
  ASSERT_EQ(resumed.exit_code, 0) << resumed.output;
  EXPECT_NE(resumed.output.find("resumed from"), std::string::npos) << resumed.output;

  std::vector<double> a = losses(dir_ / "straight" / "metrics.jsonl");
  std::vector<double> b = losses(dir_ / "resumed" / "metrics.jsonl");  // 8 from the first run + 4 resumed
  ASSERT_EQ(a.size(), 8u);
  ASSERT_EQ(b.size(), 12u);
  for (size_t i = 0; i < 8; ++i) EXPECT_EQ(a[i], b[i < 4 ? i : i + 4]) << "step " << i + 1;
  EXPECT_LT(a.back(), a.front());  // it learns

  CheckpointContents x = load_checkpoint((dir_ / "straight" / "step_00000008").string());
  CheckpointContents y = load_checkpoint((dir_ / "resumed" / "step_00000008").string());
  ASSERT_EQ(x.model.size(), y.model.size());
  for (size_t i = 0; i < x.model.size(); ++i) {
    ASSERT_EQ(x.model[i].first, y.model[i].first);
    EXPECT_EQ(x.model[i].second.to_doubles(), y.model[i].second.to_doubles()) << x.model[i].first;
  }
  for (size_t i = 0; i < x.optimizer.size(); ++i)
    EXPECT_EQ(x.optimizer[i].second.to_doubles(), y.optimizer[i].second.to_doubles()) << x.optimizer[i].first;
}

TEST_F(TrainCli, UnknownOptionIsAnError) {
  Outcome outcome = train("--steps 2 --learning-rate 3");
  EXPECT_NE(outcome.exit_code, 0);
  EXPECT_NE(outcome.output.find("--learning-rate"), std::string::npos) << outcome.output;
  std::ofstream(dir_ / "run.json") << R"({"steps": 2, "warmpu": 0.1})";
  Outcome from_json = train("--config " + (dir_ / "run.json").string());
  EXPECT_EQ(from_json.exit_code, 1);
  EXPECT_NE(error_line(from_json.output).find("did you mean \"warmup\""), std::string::npos) << from_json.output;
}

TEST_F(TrainCli, RunConfigJsonIsApplied) {
  std::ofstream(dir_ / "run.json") << R"({"steps": 3, "schedule": "cosine", "recompute": true})";
  Outcome outcome = train("--config " + (dir_ / "run.json").string() + " --out " + (dir_ / "run").string());
  ASSERT_EQ(outcome.exit_code, 0) << outcome.output;
  EXPECT_EQ(losses(dir_ / "run" / "metrics.jsonl").size(), 3u);
}

TEST_F(TrainCli, BadShardsAreOneLineErrors) {
  // A token id beyond the model's vocabulary.
  write_token_shard((dir_ / "big_ids.bin").string(), std::vector<uint32_t>(100, 70));
  Outcome ids = train("--steps 1 --out " + (dir_ / "a").string() + " --data " + (dir_ / "big_ids.bin").string());
  EXPECT_EQ(ids.exit_code, 1);
  EXPECT_NE(error_line(ids.output).find("70"), std::string::npos) << ids.output;
  // A truncated body.
  fs::copy_file(dir_ / "train.bin", dir_ / "cut.bin");
  fs::resize_file(dir_ / "cut.bin", fs::file_size(dir_ / "cut.bin") - 7);
  Outcome cut = train("--steps 1 --out " + (dir_ / "b").string() + " --data " + (dir_ / "cut.bin").string());
  EXPECT_EQ(cut.exit_code, 1);
  EXPECT_NE(error_line(cut.output).find("cut.bin"), std::string::npos) << cut.output;
  // A bad header magic.
  fs::copy_file(dir_ / "train.bin", dir_ / "magic.bin");
  { std::fstream f(dir_ / "magic.bin", std::ios::in | std::ios::out | std::ios::binary); f.put('\x01'); }
  Outcome magic = train("--steps 1 --out " + (dir_ / "c").string() + " --data " + (dir_ / "magic.bin").string());
  EXPECT_EQ(magic.exit_code, 1);
  EXPECT_NE(error_line(magic.output).find("magic"), std::string::npos) << magic.output;
}

TEST_F(TrainCli, VocabularyMismatchIsAnError) {
  fs::create_directories(dir_ / "shards");
  fs::copy_file(dir_ / "train.bin", dir_ / "shards" / "train_000000.bin");
  std::ofstream(dir_ / "shards" / "meta.json") << R"({"vocab_size": 50257})";
  Outcome outcome = train("--steps 1 --out " + (dir_ / "a").string() + " --data " +
                          (dir_ / "shards" / "train_000000.bin").string());
  EXPECT_EQ(outcome.exit_code, 1);
  const std::string line = error_line(outcome.output);
  EXPECT_NE(line.find("50257"), std::string::npos) << outcome.output;
  EXPECT_NE(line.find("64"), std::string::npos) << outcome.output;
}

TEST_F(TrainCli, CorruptOrTruncatedCheckpointIsAnErrorAndLeftIntact) {
  Outcome run = train("--steps 2 --out " + (dir_ / "run").string());
  ASSERT_EQ(run.exit_code, 0) << run.output;
  const fs::path checkpoint = dir_ / "run" / "step_00000002";
  const fs::path weights = checkpoint / "model.safetensors";
  const auto size = fs::file_size(weights);
  std::string original;
  { std::ifstream in(weights, std::ios::binary); original.assign(std::istreambuf_iterator<char>(in), {}); }
  // Flip one byte in the middle of the data.
  { std::fstream f(weights, std::ios::in | std::ios::out | std::ios::binary); f.seekp(long(size / 2)); f.put(char(original[size / 2] ^ 0x40)); }
  Outcome flipped = train("--steps 4 --out " + (dir_ / "run2").string() + " --resume " + checkpoint.string());
  EXPECT_EQ(flipped.exit_code, 1);
  EXPECT_NE(error_line(flipped.output).find("model.safetensors"), std::string::npos) << flipped.output;
  // Cut the file short.
  { std::ofstream out(weights, std::ios::binary); out.write(original.data(), long(size - 100)); }
  Outcome cut = train("--steps 4 --out " + (dir_ / "run2").string() + " --resume " + checkpoint.string());
  EXPECT_EQ(cut.exit_code, 1);
  EXPECT_NE(error_line(cut.output).find("model.safetensors"), std::string::npos) << cut.output;
  // A missing checkpoint.
  Outcome missing = train("--steps 4 --out " + (dir_ / "run2").string() + " --resume " + (dir_ / "nowhere").string());
  EXPECT_EQ(missing.exit_code, 1);
  EXPECT_NE(error_line(missing.output).find("nowhere"), std::string::npos) << missing.output;
  // The failed resumes wrote nothing into the checkpoint they read.
  EXPECT_EQ(fs::file_size(weights), size - 100);
}

TEST_F(TrainCli, UnwritableOutputDirectoryIsAnError) {
  std::ofstream(dir_ / "a_file") << "x";
  Outcome outcome = train("--steps 1 --out " + (dir_ / "a_file" / "run").string());
  EXPECT_EQ(outcome.exit_code, 1);
  EXPECT_NE(error_line(outcome.output).find("a_file"), std::string::npos) << outcome.output;
}

TEST_F(TrainCli, RepeatedNonFiniteLossStopsWithTheLastCheckpointIntact) {
  Outcome good = train("--steps 2 --out " + (dir_ / "run").string());
  ASSERT_EQ(good.exit_code, 0) << good.output;
  // An absurd learning rate overflows the weights: the loss turns non-finite and stays so.
  Outcome bad = train("--steps 40 --lr 1e30 --warmup 0 --clip 0 --max-bad-steps 3 --out " + (dir_ / "run").string() +
                      " --resume " + (dir_ / "run" / "step_00000002").string());
  EXPECT_EQ(bad.exit_code, 1) << bad.output;
  EXPECT_NE(bad.output.find("refused"), std::string::npos) << bad.output;
  EXPECT_NE(error_line(bad.output).find("step_00000002"), std::string::npos) << bad.output;
  EXPECT_NO_THROW(load_checkpoint((dir_ / "run" / "step_00000002").string()));
}

TEST_F(TrainCli, DescribePrintsTheCostJsonLast) {
  Outcome outcome = train("--describe");
  ASSERT_EQ(outcome.exit_code, 0) << outcome.output;
  std::string last;
  std::istringstream lines(outcome.output);
  for (std::string line; std::getline(lines, line);)
    if (!line.empty()) last = line;
  auto json = nlohmann::json::parse(last);
  EXPECT_GT(json["params"].get<int64_t>(), 0);
  EXPECT_TRUE(json.contains("non_embedding_params") && json.contains("flops_per_token") && json.contains("cache_bytes"));
}

}  // namespace
}  // namespace braid
