// Checkpoint directories: round trip, latest/keep-last bookkeeping, missing and corrupt files,
// unwritable output, and a save killed with SIGKILL mid-write leaving the previous one loadable.
#include "train/checkpoint.h"

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <set>
#include <thread>

#include "tests/test_util.h"

namespace braid {
namespace {

using testing::error_of;

namespace fs = std::filesystem;

class ScratchDir {
 public:
  ScratchDir() {
    const auto* test = ::testing::UnitTest::GetInstance()->current_test_info();
    path_ =
        fs::temp_directory_path() / ("braid_checkpoint_" + std::to_string(::getpid()) + "_" + test->name());
    fs::remove_all(path_);
    fs::create_directories(path_);
  }
  ~ScratchDir() { fs::remove_all(path_); }
  std::string sub(const std::string& name) const { return (path_ / name).string(); }

 private:
  fs::path path_;
};

std::string read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

void write_bytes(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), std::streamsize(bytes.size()));
}

std::string bytes_of(const Tensor& tensor) {
  return std::string(static_cast<const char*>(tensor.raw_data()), tensor.nbytes());
}

std::set<std::string> entries(const std::string& dir) {
  std::set<std::string> names;
  for (const auto& entry : fs::directory_iterator(dir)) names.insert(entry.path().filename().string());
  return names;
}

// A small model's worth of state; `seed` makes every tensor and the state different.
CheckpointContents make_contents(uint64_t seed, int64_t step) {
  CheckpointContents contents;
  const std::vector<std::pair<std::string, Shape>> parameters = {{"embed.weight", {50, 16}},
                                                                 {"layers.0.mixer.A_log", {4}},
                                                                 {"layers.0.ffn.up.weight", {32, 16}},
                                                                 {"norm.weight", {16}}};
  uint64_t stream = seed * 100;
  for (const auto& [name, shape] : parameters) {
    contents.model.emplace_back(name, testing::random_normal(shape, ++stream, DType::f32));
    contents.optimizer.emplace_back("m." + name, testing::random_normal(shape, ++stream, DType::f32, 0.01));
    contents.optimizer.emplace_back("v." + name,
                                    testing::random_uniform(shape, ++stream, 0, 1e-4, DType::f32));
  }
  contents.config_json = R"({"model": {"d_model": 16, "n_layers": 1}, "train": {"lr": 0.003, "seed": )" +
                         std::to_string(seed) + "}}";
  contents.state_json = R"({"step": )" + std::to_string(step) + R"(, "tokens_seen": )" +
                        std::to_string(step * 4096) + R"(, "rng": {"seed": )" + std::to_string(seed) +
                        R"(, "offset": 1234}, "data_position": 987654, "world_size": 1})";
  return contents;
}

void expect_same_tensors(const NamedTensors& got, const NamedTensors& expected) {
  ASSERT_EQ(got.size(), expected.size());
  for (size_t i = 0; i < got.size(); ++i) {
    EXPECT_EQ(got[i].first, expected[i].first);
    EXPECT_EQ(got[i].second.dtype(), expected[i].second.dtype()) << expected[i].first;
    EXPECT_EQ(got[i].second.shape(), expected[i].second.shape()) << expected[i].first;
    EXPECT_EQ(bytes_of(got[i].second), bytes_of(expected[i].second)) << expected[i].first;
  }
}

void expect_same_contents(const CheckpointContents& got, const CheckpointContents& expected) {
  expect_same_tensors(got.model, expected.model);
  expect_same_tensors(got.optimizer, expected.optimizer);
  EXPECT_EQ(got.config_json, expected.config_json);
  EXPECT_EQ(got.state_json, expected.state_json);
}

bool mentions(const std::string& message, const std::string& part) {
  return message.find(part) != std::string::npos;
}

TEST(Checkpoint, SavesAndLoadsEveryFileExactly) {
  ScratchDir root;
  CheckpointContents contents = make_contents(1, 1234);
  std::string dir = save_checkpoint(root.sub("run"), 1234, contents);
  EXPECT_EQ(dir, root.sub("run") + "/step_00001234");
  EXPECT_EQ(entries(root.sub("run")), (std::set<std::string>{"step_00001234"}));
  EXPECT_EQ(entries(dir), (std::set<std::string>{"model.safetensors", "optimizer.safetensors", "config.json",
                                                 "state.json"}));
  expect_same_contents(load_checkpoint(dir), contents);
  // The JSON files are the caller's text, byte for byte; the weights are plain safetensors.
  EXPECT_EQ(read_bytes(dir + "/state.json"), contents.state_json);
  SafetensorsFile model = load_safetensors(dir + "/model.safetensors");
  EXPECT_EQ(model.metadata().at("step"), "1234");
  EXPECT_EQ(load_safetensors(dir + "/optimizer.safetensors").names().front(), "m.embed.weight");
}

TEST(Checkpoint, LatestIsTheHighestStepAndKeepLastPrunes) {
  ScratchDir root;
  std::string run = root.sub("run");
  EXPECT_FALSE(find_latest_checkpoint(run));
  keep_last(run, 2);  // nothing there yet: no error
  for (int64_t step : {20, 99999999, 5, 100000000, 40})
    save_checkpoint(run, step, make_contents(uint64_t(step), step));
  // Numeric order, not string order ("step_100000000" < "step_99999999" as text).
  EXPECT_EQ(find_latest_checkpoint(run), run + "/step_100000000");

  // A temporary directory of a process that is gone, one of a live process (ours), a step
  // directory missing a file, and unrelated entries.
  pid_t child = fork();
  if (child == 0) _exit(0);
  ASSERT_GT(child, 0);
  waitpid(child, nullptr, 0);
  std::string dead_writer = "step_00000050.tmp-" + std::to_string(child);
  std::string live_writer = "step_00000060.tmp-" + std::to_string(::getpid());
  fs::create_directories(run + "/" + dead_writer);
  write_bytes(run + "/" + dead_writer + "/model.safetensors", "partial");
  fs::create_directories(run + "/" + live_writer);
  fs::create_directories(run + "/step_200000000");
  write_bytes(run + "/step_200000000/model.safetensors", "only one file");
  fs::create_directories(run + "/notes");
  write_bytes(run + "/README", "keep me");
  EXPECT_EQ(find_latest_checkpoint(run), run + "/step_100000000");

  keep_last(run, 2);
  EXPECT_EQ(entries(run), (std::set<std::string>{"step_99999999", "step_100000000", live_writer,
                                                 "step_200000000", "notes", "README"}));
  expect_same_contents(load_checkpoint(run + "/step_99999999"), make_contents(99999999, 99999999));
  EXPECT_TRUE(mentions(error_of([&] { keep_last(run, 0); }), "at least one"));
}

TEST(Checkpoint, SavingAStepAgainReplacesIt) {
  ScratchDir root;
  std::string run = root.sub("run");
  save_checkpoint(run, 7, make_contents(1, 7));
  CheckpointContents second = make_contents(2, 7);
  std::string dir = save_checkpoint(run, 7, second);
  expect_same_contents(load_checkpoint(dir), second);
  EXPECT_EQ(entries(run), (std::set<std::string>{"step_00000007"}));
}

TEST(Checkpoint, MissingFilesAreNamed) {
  ScratchDir root;
  std::string run = root.sub("run");
  save_checkpoint(run, 1, make_contents(1, 1));
  for (std::string file : {"model.safetensors", "optimizer.safetensors", "config.json", "state.json"}) {
    std::string dir = save_checkpoint(run, 2, make_contents(2, 2));
    fs::remove(dir + "/" + file);
    std::string message = error_of([&] { load_checkpoint(dir); });
    EXPECT_TRUE(mentions(message, dir + "/" + file + ": missing")) << message;
    // An incomplete directory is never taken for the latest checkpoint.
    EXPECT_EQ(find_latest_checkpoint(run), run + "/step_00000001");
  }
  EXPECT_TRUE(mentions(error_of([&] { load_checkpoint(run + "/step_00000003"); }), "does not exist"));
  EXPECT_TRUE(
      mentions(error_of([&] { load_checkpoint(run + "/step_00000001/state.json"); }), "not a directory"));
}

TEST(Checkpoint, CorruptOrTruncatedFilesAreNamed) {
  ScratchDir root;
  std::string run = root.sub("run");
  CheckpointContents contents = make_contents(3, 30);
  std::string dir = save_checkpoint(run, 30, contents);
  const std::vector<std::string> files = {"model.safetensors", "optimizer.safetensors", "config.json",
                                          "state.json"};
  for (const std::string& file : files) {
    std::string path = dir + "/" + file;
    const std::string original = read_bytes(path);
    std::vector<std::string> damaged_versions;
    for (size_t position :
         {size_t(0), size_t(9), original.size() / 3, original.size() / 2, original.size() - 1}) {
      std::string flipped = original;
      flipped[position] = char(flipped[position] ^ 0x04);
      damaged_versions.push_back(flipped);
    }
    for (size_t length : {size_t(0), size_t(5), original.size() / 2, original.size() - 1})
      damaged_versions.push_back(original.substr(0, length));
    for (const std::string& damaged : damaged_versions) {
      write_bytes(path, damaged);
      std::string message = error_of([&] { load_checkpoint(dir); });
      EXPECT_TRUE(mentions(message, path)) << message;
    }
    write_bytes(path, original);
    expect_same_contents(load_checkpoint(dir), contents);
  }

  // A flipped weight names the file and the tensor.
  std::string model_path = dir + "/model.safetensors";
  std::string model = read_bytes(model_path);
  model[model.size() - 3] = char(model[model.size() - 3] ^ 0x40);
  write_bytes(model_path, model);
  std::string message = error_of([&] { load_checkpoint(dir); });
  EXPECT_TRUE(mentions(message, model_path) && mentions(message, "tensor '") && mentions(message, "checksum"))
      << message;
}

TEST(Checkpoint, UnwritableOutputFailsBeforeWritingAnything) {
  ScratchDir root;
  std::string run = root.sub("run");
  save_checkpoint(run, 1, make_contents(1, 1));
  // Tests run as root, so permission bits would not stop a write; a regular file as parent does.
  write_bytes(root.sub("plain_file"), "not a directory");
  std::string under_file = root.sub("plain_file") + "/checkpoints";
  std::string message = error_of([&] { check_writable(under_file); });
  EXPECT_TRUE(mentions(message, under_file) && mentions(message, "cannot create")) << message;
  message = error_of([&] { save_checkpoint(under_file, 2, make_contents(2, 2)); });
  EXPECT_TRUE(mentions(message, under_file)) << message;
  message = error_of([&] { check_writable(root.sub("plain_file")); });
  EXPECT_TRUE(mentions(message, root.sub("plain_file"))) << message;
  check_writable(root.sub("fresh/nested"));  // created on demand
  EXPECT_TRUE(fs::is_directory(root.sub("fresh/nested")));
  EXPECT_TRUE(entries(root.sub("fresh/nested")).empty());

  // Invalid JSON is refused before anything is written.
  CheckpointContents bad = make_contents(2, 2);
  bad.state_json = R"({"step": 2,)";
  EXPECT_TRUE(
      mentions(error_of([&] { save_checkpoint(run, 2, bad); }), "checkpoint state is not valid JSON"));
  // A save failing midway (a tensor name given twice) removes its temporary directory.
  bad = make_contents(2, 2);
  bad.optimizer.push_back(bad.optimizer.front());
  EXPECT_TRUE(mentions(error_of([&] { save_checkpoint(run, 2, bad); }), "given twice"));
  EXPECT_EQ(entries(run), (std::set<std::string>{"step_00000001"}));
  expect_same_contents(load_checkpoint(run + "/step_00000001"), make_contents(1, 1));
}

// A child process writes a 200 MB checkpoint and is killed with SIGKILL as soon as its data starts
// reaching the disk: the previous checkpoint stays the latest and loads, and keep_last clears the rest.
TEST(Checkpoint, KillDuringSaveLeavesThePreviousCheckpoint) {
  ScratchDir root;
  std::string run = root.sub("run");
  CheckpointContents previous = make_contents(1, 100);
  save_checkpoint(run, 100, previous);

  CheckpointContents large = make_contents(2, 200);
  large.model = {{"embed.weight", testing::random_uniform({25'000'000}, 901, -1, 1, DType::f32)}};
  large.optimizer = {{"m.embed.weight", testing::random_uniform({12'500'000}, 902, -1, 1, DType::f32)},
                     {"v.embed.weight", testing::random_uniform({12'500'000}, 903, 0, 1, DType::f32)}};

  pid_t child = fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    try {
      save_checkpoint(run, 200, large);
    } catch (...) {
      _exit(2);
    }
    _exit(0);
  }
  std::string temporary = run + "/step_00000200.tmp-" + std::to_string(child);
  std::string partial = temporary + "/model.safetensors.tmp-" + std::to_string(child);
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  std::error_code error;
  while (!(fs::exists(partial, error) && fs::file_size(partial, error) > 0 && !error) &&
         std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::microseconds(200));
  ::kill(child, SIGKILL);
  int status = 0;
  ASSERT_EQ(waitpid(child, &status, 0), child);
  ASSERT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL) << "the save finished before the kill";

  EXPECT_TRUE(fs::is_directory(temporary));
  EXPECT_FALSE(fs::exists(run + "/step_00000200"));
  EXPECT_EQ(find_latest_checkpoint(run), run + "/step_00000100");
  expect_same_contents(load_checkpoint(run + "/step_00000100"), previous);
  keep_last(run, 3);
  EXPECT_EQ(entries(run), (std::set<std::string>{"step_00000100"}));
}

}  // namespace
}  // namespace braid
