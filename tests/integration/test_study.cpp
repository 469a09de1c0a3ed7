// tools/study.py end to end on a micro study (two tiny-preset entries, 8 steps each, a byte-level
// tokenizer and shards made here): it trains, evaluates and writes the CSV, Markdown and plots; its
// cost columns equal `train --describe`; a rerun skips finished runs without retraining; an
// interrupted run resumes from its checkpoint and ends with the same numbers; a study with an unknown
// preset or an impossible override fails before anything trains, naming the entry and the key.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "runtime/token_shard.h"
#include "tests/run_command.h"
#include "tools/tokenizer.h"

namespace braid {
namespace {

namespace fs = std::filesystem;
using Json = nlohmann::json;

using testing::Outcome;

// stdout and stderr together.
Outcome run_command(const std::string& command) { return testing::run_command(command + " 2>&1"); }

bool has_program(const std::string& name) { return std::system(("command -v " + name + " > /dev/null 2>&1").c_str()) == 0; }

Json read_json(const fs::path& path) {
  std::ifstream in(path);
  return Json::parse(in);
}

std::vector<std::map<std::string, std::string>> read_csv(const fs::path& path) {
  // The runner's CSV quotes only the overrides column, which holds no newlines.
  auto split = [](const std::string& line) {
    std::vector<std::string> cells;
    std::string cell;
    bool quoted = false;
    for (size_t i = 0; i < line.size(); ++i) {
      const char c = line[i];
      if (c == '"' && quoted && i + 1 < line.size() && line[i + 1] == '"') {
        cell += '"';
        ++i;
      } else if (c == '"') {
        quoted = !quoted;
      } else if (c == ',' && !quoted) {
        cells.push_back(cell);
        cell.clear();
      } else if (c != '\r') {
        cell += c;
      }
    }
    cells.push_back(cell);
    return cells;
  };
  std::ifstream in(path);
  std::string line;
  std::getline(in, line);
  const std::vector<std::string> header = split(line);
  std::vector<std::map<std::string, std::string>> rows;
  while (std::getline(in, line)) {
    const std::vector<std::string> cells = split(line);
    std::map<std::string, std::string> row;
    for (size_t i = 0; i < header.size() && i < cells.size(); ++i) row[header[i]] = cells[i];
    rows.push_back(row);
  }
  return rows;
}

const char* kText =
    "The river runs past green hills. Old stone walls stand near the small town. Birds sing over quiet "
    "fields of grass, and the wind moves the tall trees. ";

class StudyRunner : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    repo_ = fs::current_path();
    bin_ = fs::read_symlink("/proc/self/exe").parent_path().parent_path();
    if (!ready()) return;
    dir_ = fs::temp_directory_path() / ("braid_study_" + std::to_string(::getpid()));
    fs::remove_all(dir_);
    fs::create_directories(dir_);
    // A byte-level tokenizer (token i = byte i, <|endoftext|> = 256): its ids fit the tiny presets'
    // vocabulary, and the evaluations decode text with it.
    std::vector<std::string> bytes;
    for (int b = 0; b < 256; ++b) bytes.emplace_back(1, char(b));
    Tokenizer::from_ranks(bytes, {{"<|endoftext|>", 256}}).save(path("tokenizer.txt"));
    const Tokenizer tokenizer = Tokenizer::load(path("tokenizer.txt"));
    std::string corpus;
    for (int i = 0; i < 30; ++i) corpus += kText;
    std::ofstream(path("haystack.txt")) << corpus;
    write_token_shard(path("train.bin"), tokenizer.encode(corpus));
    write_token_shard(path("val.bin"), tokenizer.encode(corpus.substr(11, 2000)));
    std::ofstream(path("mc.jsonl")) << R"({"context": "The river runs past green", "choices": [" hills.", " cars."], "gold": 0}
{"context": "Birds sing over quiet", "choices": [" stones", " fields"], "gold": 1}
{"context": "the wind moves the tall", "choices": [" trees.", " walls."], "gold": 0}
)";
    write_study("micro", R"([{"name": "llama", "preset": "llama"},
        {"name": "intra-add", "preset": "intra-1to5", "overrides": {"intra.fusion": "add"}}])");
    first_ = study("micro");
  }
  static void TearDownTestSuite() {
    if (!dir_.empty()) fs::remove_all(dir_);
  }
  void SetUp() override {
    if (!ready()) GTEST_SKIP() << "needs python3, gnuplot, " << (bin_ / "train") << ", " << (bin_ / "infer")
                               << " and tools/study.py under the working directory";
  }

  static bool ready() {
    return has_program("python3") && has_program("gnuplot") && fs::exists(bin_ / "train") && fs::exists(bin_ / "infer") &&
           fs::exists(repo_ / "tools/study.py");
  }
  static std::string path(const std::string& name) { return (dir_ / name).string(); }

  // A study named `name` with its own output and run store under the test directory.
  // `shards` names the folder of train.bin and val.bin under the test directory; `extra` adds study keys.
  static void write_study(const std::string& name, const std::string& entries, const std::string& shards = ".",
                          const std::string& extra = "") {
    std::ofstream(path(name + ".json")) << R"({"name": ")" << name << R"(", "scale": "tiny", )" << extra << R"(
      "out": ")" << path(name + "_out") << R"(", "store": ")" << path(name + "_store") << R"(",
      "train": {"data": ")" << path(shards + "/train.bin") << R"(", "val": ")" << path(shards + "/val.bin") << R"(",
                "tokenizer": ")" << path("tokenizer.txt") << R"(", "seq_len": 16, "micro_batch": 2,
                "lr": 0.006, "eval_every": 0, "eval_batches": 2, "sample_tokens": 4, "threads": 2},
      "budgets": {"data": {"tokens": 256}},
      "evaluations": {"ppl": {"context": 32, "bucket": 8, "max_tokens": 128},
                      "niah": {"haystack": ")" << path("haystack.txt") << R"(", "lengths": [160], "depths": [0, 1], "trials": 1},
                      "mc": {"data": ")" << path("mc.jsonl") << R"("},
                      "bench": {"batch": 1, "prompt": 8, "totals": [16]}},
      "cost_contexts": [1024, 8192],
      "entries": )" << entries << "}";
  }
  static Outcome study(const std::string& name, const std::string& flags = "") {
    return run_command("cd " + repo_.string() + " && python3 tools/study.py --bin " + bin_.string() + " " + flags +
                       " " + path(name + ".json"));
  }
  // The run directories in a study's store (the runner's derived inputs live in "inputs").
  static std::vector<fs::path> run_dirs(const std::string& name) {
    std::vector<fs::path> dirs;
    if (fs::exists(path(name + "_store")))
      for (const auto& entry : fs::directory_iterator(path(name + "_store")))
        if (entry.is_directory() && entry.path().filename() != "inputs") dirs.push_back(entry.path());
    return dirs;
  }
  static fs::path run_dir(const std::string& prefix) {
    for (const fs::path& dir : run_dirs("micro"))
      if (dir.filename().string().rfind(prefix + "-", 0) == 0) return dir;
    return {};
  }

  static inline fs::path repo_, bin_, dir_;
  static inline Outcome first_;
};

TEST_F(StudyRunner, WritesTablesAndPlotsWithTheCostModelsNumbers) {
  ASSERT_EQ(first_.exit_code, 0) << first_.output;
  const fs::path out = path("micro_out");
  for (const char* file : {"results.csv", "results.md", "plots/loss_curves.png", "plots/pareto.png",
                           "plots/cache_vs_context.png", "plots/position_loss.png", "plots/niah_llama.png"}) {
    ASSERT_TRUE(fs::exists(out / file)) << file << "\n" << first_.output;
    EXPECT_GT(fs::file_size(out / file), 100u) << file;
  }
  std::ifstream png(out / "plots/loss_curves.png", std::ios::binary);
  char magic[4] = {};
  png.read(magic, 4);
  EXPECT_EQ(std::string(magic + 1, 3), "PNG");

  const auto rows = read_csv(out / "results.csv");
  ASSERT_EQ(rows.size(), 2u);
  for (const auto& row : rows) {
    SCOPED_TRACE(row.at("run"));
    const fs::path dir = repo_ / row.at("run_dir");
    // The cost columns against the engine's own cost table of the run's model.
    const Outcome described = run_command((bin_ / "train").string() + " --describe --seq-len 8192 --model " +
                                          (dir / "model.json").string());
    ASSERT_EQ(described.exit_code, 0) << described.output;
    const Json cost = Json::parse(described.output.substr(described.output.rfind("\n{") + 1));
    EXPECT_EQ(std::stoll(row.at("params")), cost["params"].get<int64_t>());
    EXPECT_EQ(std::stoll(row.at("non_embedding_params")), cost["non_embedding_params"].get<int64_t>());
    EXPECT_NEAR(std::stod(row.at("flops_per_token_8k")), cost["flops_per_token"].get<double>(),
                1e-9 * cost["flops_per_token"].get<double>());
    EXPECT_NEAR(std::stod(row.at("cache_mib_8k")), cost["cache_bytes"].get<double>() / (1 << 20), 1e-9);
    EXPECT_EQ(row.at("pattern"), cost["pattern"].get<std::string>());
    // 256 tokens of 2 x 16 a step.
    EXPECT_EQ(row.at("steps"), "8");
    EXPECT_EQ(row.at("tokens"), "256");
    // Figures copied from the engine's outputs.
    double val_loss = NAN;
    std::ifstream metrics(dir / "train/metrics.jsonl");
    for (std::string line; std::getline(metrics, line);) {
      const Json entry = Json::parse(line);
      if (entry.contains("val_loss")) val_loss = entry["val_loss"].get<double>();
    }
    EXPECT_NEAR(std::stod(row.at("val_loss")), val_loss, 1e-12 * val_loss);
    EXPECT_DOUBLE_EQ(std::stod(row.at("mc_acc")), read_json(dir / "mc.json")["acc"].get<double>());
    EXPECT_DOUBLE_EQ(std::stod(row.at("niah_accuracy")), read_json(dir / "niah.json")["accuracy"].get<double>());
    EXPECT_DOUBLE_EQ(std::stod(row.at("decode_tokens_per_s")),
                     read_json(dir / "bench.json")["results"][0]["decode_tokens_per_s"].get<double>());
  }
  EXPECT_EQ(rows[1].at("overrides"), R"({"intra.fusion":"add"})");
  std::ifstream markdown(out / "results.md");
  std::stringstream text;
  text << markdown.rdbuf();
  EXPECT_NE(text.str().find("| intra-add |"), std::string::npos) << text.str();
  EXPECT_NE(text.str().find("plots/loss_curves.png"), std::string::npos);
}

TEST_F(StudyRunner, RerunSkipsFinishedRunsWithoutRetraining) {
  ASSERT_EQ(first_.exit_code, 0) << first_.output;
  std::map<fs::path, fs::file_time_type> written;
  for (const fs::path& dir : run_dirs("micro"))
    for (const char* file : {"train/metrics.jsonl", "train.log", "ppl.json", "result.json"})
      written[dir / file] = fs::last_write_time(dir / file);
  ASSERT_EQ(written.size(), 8u);
  const Outcome again = study("micro");
  ASSERT_EQ(again.exit_code, 0) << again.output;
  EXPECT_NE(again.output.find("skip llama: finished"), std::string::npos) << again.output;
  EXPECT_NE(again.output.find("skip intra-add: finished"), std::string::npos) << again.output;
  EXPECT_EQ(again.output.find(" train "), std::string::npos) << again.output;
  for (const auto& [file, time] : written) EXPECT_EQ(fs::last_write_time(file), time) << file;
}

TEST_F(StudyRunner, InterruptedRunResumesFromItsCheckpoint) {
  ASSERT_EQ(first_.exit_code, 0) << first_.output;
  const fs::path dir = run_dir("llama");
  ASSERT_FALSE(dir.empty());
  const Json finished = read_json(dir / "result.json");
  // As if killed between the checkpoint at step 6 and the end: no final checkpoint, no outputs.
  ASSERT_TRUE(fs::exists(dir / "train/step_00000006")) << "checkpoints every 8 / 4 steps, 2 kept";
  fs::remove_all(dir / "train/step_00000008");
  for (const char* file : {"train_done.json", "result.json", "ppl.json"}) fs::remove(dir / file);
  const Outcome resumed = study("micro");
  ASSERT_EQ(resumed.exit_code, 0) << resumed.output;
  EXPECT_NE(resumed.output.find("resume llama from " + (dir / "train/step_00000006").string()), std::string::npos)
      << resumed.output;
  EXPECT_NE(resumed.output.find("skip intra-add: finished"), std::string::npos) << resumed.output;
  // Resuming is exact, so the interrupted run ends where the uninterrupted one did.
  const Json result = read_json(dir / "result.json");
  EXPECT_EQ(result["train_loss"], finished["train_loss"]);
  EXPECT_EQ(result["val_loss"], finished["val_loss"]);
  EXPECT_EQ(result["ppl_nll"], finished["ppl_nll"]);
}

TEST_F(StudyRunner, UnknownPresetFailsBeforeTrainingNamingEntryAndKey) {
  write_study("typo", R"([{"name": "good", "preset": "llama"}, {"name": "typo", "preset": "lama"}])");
  const Outcome outcome = study("typo");
  EXPECT_EQ(outcome.exit_code, 1) << outcome.output;
  EXPECT_NE(outcome.output.find("error: "), std::string::npos) << outcome.output;
  EXPECT_NE(outcome.output.find("entry \"typo\": key \"preset\": unknown preset \"lama\""), std::string::npos)
      << outcome.output;
  EXPECT_TRUE(run_dirs("typo").empty()) << "nothing may train before every entry is checked";
  EXPECT_FALSE(fs::exists(path("typo_out"))) << outcome.output;
}

TEST_F(StudyRunner, ImpossibleOverrideFailsBeforeTrainingNamingEntryAndKey) {
  write_study("negative", R"([{"name": "good", "preset": "llama"},
      {"name": "shrunk", "preset": "mamba", "overrides": {"ffn.d_ffn": 64, "d_model": -64}}])");
  Outcome outcome = study("negative");
  EXPECT_EQ(outcome.exit_code, 1) << outcome.output;
  EXPECT_NE(outcome.output.find("entry \"shrunk\": override \"d_model\": "), std::string::npos) << outcome.output;
  EXPECT_TRUE(run_dirs("negative").empty());

  write_study("misspelt", R"([{"name": "good", "preset": "llama"},
      {"name": "spelling", "preset": "intra-1to5", "overrides": {"intra.fusoin": "add"}}])");
  outcome = study("misspelt");
  EXPECT_EQ(outcome.exit_code, 1) << outcome.output;
  EXPECT_NE(outcome.output.find("entry \"spelling\": override \"intra.fusoin\": "), std::string::npos) << outcome.output;
  EXPECT_NE(outcome.output.find("fusoin"), std::string::npos) << outcome.output;
  EXPECT_TRUE(run_dirs("misspelt").empty());
}

TEST_F(StudyRunner, VocabularyOtherThanTheShardsFailsBeforeTraining) {
  // prepare_data's meta.json beside the shards names their vocabulary; the tiny presets have 50257 ids.
  fs::create_directories(path("small_vocab"));
  fs::copy_file(path("train.bin"), path("small_vocab/train.bin"), fs::copy_options::overwrite_existing);
  fs::copy_file(path("val.bin"), path("small_vocab/val.bin"), fs::copy_options::overwrite_existing);
  std::ofstream(path("small_vocab/meta.json")) << R"({"vocab_size": 300})";
  write_study("vocab", R"([{"name": "mamba", "preset": "mamba"}])", "small_vocab");
  Outcome outcome = study("vocab");
  EXPECT_EQ(outcome.exit_code, 1) << outcome.output;
  EXPECT_NE(outcome.output.find("entry \"mamba\": key \"vocab_size\": the model has 50257 ids"), std::string::npos)
      << outcome.output;
  EXPECT_TRUE(run_dirs("vocab").empty());

  // A study-level override applies under every entry and makes the plan valid.
  write_study("vocab_fixed", R"([{"name": "mamba", "preset": "mamba"}])", "small_vocab",
              R"("overrides": {"vocab_size": 300},)");
  outcome = study("vocab_fixed", "--dry-run");
  EXPECT_EQ(outcome.exit_code, 0) << outcome.output;
  EXPECT_TRUE(run_dirs("vocab_fixed").empty());
}

}  // namespace
}  // namespace braid
