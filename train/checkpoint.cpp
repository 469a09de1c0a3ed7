#include "train/checkpoint.h"

#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "runtime/file_sync.h"

namespace braid {

namespace {

namespace fs = std::filesystem;

constexpr const char* kModelFile = "model.safetensors";
constexpr const char* kOptimizerFile = "optimizer.safetensors";
constexpr const char* kConfigFile = "config.json";
constexpr const char* kStateFile = "state.json";
constexpr std::array<const char*, 4> kCheckpointFiles = {kModelFile, kOptimizerFile, kConfigFile, kStateFile};
// model.safetensors metadata keys recording the JSON files' CRC-32C, so that edits and corruption
// of those files are caught too (the metadata itself is under the safetensors checksums).
const std::string kConfigChecksumKey = "checksum.config.json";
const std::string kStateChecksumKey = "checksum.state.json";


// Digits only (no sign, no spaces), short enough for int64.
std::optional<int64_t> parse_digits(const std::string& text) {
  if (text.empty() || text.size() > 18) return std::nullopt;
  int64_t value = 0;
  for (char c : text) {
    if (c < '0' || c > '9') return std::nullopt;
    value = value * 10 + (c - '0');
  }
  return value;
}

// "step_00001234" -> 1234
std::optional<int64_t> step_of_dir_name(const std::string& name) {
  if (!name.starts_with("step_")) return std::nullopt;
  return parse_digits(name.substr(5));
}

// "step_00001234.tmp-4242" -> 4242, the pid of the process that was writing it.
std::optional<int64_t> writer_of_temporary_dir_name(const std::string& name) {
  size_t marker = name.find(".tmp-");
  if (marker == std::string::npos || !step_of_dir_name(name.substr(0, marker))) return std::nullopt;
  return parse_digits(name.substr(marker + 5));
}

bool process_alive(int64_t pid) {
  if (pid <= 0 || pid > INT32_MAX) return false;
  return ::kill(pid_t(pid), 0) == 0 || errno == EPERM;
}

bool has_all_files(const fs::path& dir) {
  std::error_code error;
  for (const char* file : kCheckpointFiles)
    if (!fs::is_regular_file(dir / file, error)) return false;
  return true;
}

std::string checksum_text(const std::string& text) {
  char hex[9];
  snprintf(hex, sizeof hex, "%08x", crc32c(text.data(), text.size()));
  return hex;
}

void check_json(const std::string& text, const std::string& what) {
  try {
    nlohmann::json parsed = nlohmann::json::parse(text);
    (void)parsed;
  } catch (const nlohmann::json::exception& error) {
    BRAID_FAIL(what, " is not valid JSON (", error.what(), ")");
  }
}

void write_text_file_synced(const std::string& path, const std::string& text) {
  {
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    if (!out) BRAID_FAIL(path, ": cannot create (", errno_text(), ")");
    out.write(text.data(), std::streamsize(text.size()));
    out.close();
    if (!out) BRAID_FAIL(path, ": write failed (", errno_text(), ")");
  }
  fsync_path(path);
}

std::string read_text_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) BRAID_FAIL(path, ": cannot open (", errno_text(), ")");
  std::ostringstream text;
  text << in.rdbuf();
  if (in.bad()) BRAID_FAIL(path, ": read failed");
  return text.str();
}

std::vector<fs::directory_entry> list_directory(const std::string& dir) {
  try {
    return {fs::directory_iterator(dir), fs::directory_iterator()};
  } catch (const fs::filesystem_error& error) {
    BRAID_FAIL(dir, ": cannot list the checkpoint directory (", error.code().message(), ")");
  }
}

void remove_directory(const fs::path& dir) {
  std::error_code error;
  fs::remove_all(dir, error);
  if (error) BRAID_FAIL(dir.string(), ": cannot delete (", error.message(), ")");
}

// Puts the finished temporary directory at `final_dir`, replacing a checkpoint of the same step
// in one atomic exchange where the filesystem allows it.
void move_into_place(const fs::path& temporary, const fs::path& final_dir) {
  std::error_code error;
  if (fs::exists(final_dir, error)) {
    if (::renameat2(AT_FDCWD, temporary.c_str(), AT_FDCWD, final_dir.c_str(), RENAME_EXCHANGE) == 0) {
      remove_directory(temporary);  // now holds the replaced checkpoint
      return;
    }
    remove_directory(final_dir);
  }
  if (::rename(temporary.c_str(), final_dir.c_str()) != 0)
    BRAID_FAIL(final_dir.string(), ": cannot rename ", temporary.string(), " into place (", errno_text(),
               ")");
}

}  // namespace

std::string checkpoint_dir_name(int64_t step) {
  char name[32];
  snprintf(name, sizeof name, "step_%08lld", static_cast<long long>(step));
  return name;
}

void check_writable(const std::string& root_dir) {
  std::error_code error;
  fs::create_directories(root_dir, error);
  if (error) BRAID_FAIL(root_dir, ": cannot create the checkpoint directory (", error.message(), ")");
  if (!fs::is_directory(root_dir, error)) BRAID_FAIL(root_dir, ": checkpoint path is not a directory");
  std::string probe = (fs::path(root_dir) / (".write-test-" + std::to_string(::getpid()))).string();
  int fd = ::open(probe.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) BRAID_FAIL(root_dir, ": checkpoint directory is not writable (", errno_text(), ")");
  bool wrote = ::write(fd, "x", 1) == 1;
  int saved_errno = errno;
  ::close(fd);
  ::unlink(probe.c_str());
  errno = saved_errno;
  if (!wrote) BRAID_FAIL(root_dir, ": checkpoint directory is not writable (", errno_text(), ")");
}

std::string save_checkpoint(const std::string& root_dir, int64_t step, const CheckpointContents& contents) {
  BRAID_CHECK(step >= 0, "checkpoint step must be non-negative, got ", step);
  check_json(contents.config_json, "checkpoint config");
  check_json(contents.state_json, "checkpoint state");
  check_writable(root_dir);

  fs::path root(root_dir);
  fs::path final_dir = root / checkpoint_dir_name(step);
  fs::path temporary = root / (checkpoint_dir_name(step) + ".tmp-" + std::to_string(::getpid()));
  remove_directory(temporary);  // left by an earlier process that had this pid
  std::error_code error;
  fs::create_directory(temporary, error);
  if (error) BRAID_FAIL(temporary.string(), ": cannot create (", error.message(), ")");
  try {
    std::map<std::string, std::string> model_metadata = {
        {"format", "pt"},
        {"step", std::to_string(step)},
        {kConfigChecksumKey, checksum_text(contents.config_json)},
        {kStateChecksumKey, checksum_text(contents.state_json)}};
    save_safetensors((temporary / kModelFile).string(), contents.model, model_metadata);
    save_safetensors((temporary / kOptimizerFile).string(), contents.optimizer,
                     {{"format", "pt"}, {"step", std::to_string(step)}});
    write_text_file_synced((temporary / kConfigFile).string(), contents.config_json);
    write_text_file_synced((temporary / kStateFile).string(), contents.state_json);
    fsync_path(temporary.string(), /*directory=*/true);
    move_into_place(temporary, final_dir);
    fsync_path(root.string(), /*directory=*/true);
  } catch (...) {
    fs::remove_all(temporary, error);
    throw;
  }
  return final_dir.string();
}

CheckpointContents load_checkpoint(const std::string& dir) {
  std::error_code error;
  if (!fs::exists(dir, error)) BRAID_FAIL(dir, ": checkpoint directory does not exist");
  if (!fs::is_directory(dir, error)) BRAID_FAIL(dir, ": checkpoint path is not a directory");
  for (const char* file : kCheckpointFiles) {
    fs::path path = fs::path(dir) / file;
    if (!fs::is_regular_file(path, error)) BRAID_FAIL(path.string(), ": missing (incomplete checkpoint)");
  }

  CheckpointContents contents;
  SafetensorsFile model = load_safetensors((fs::path(dir) / kModelFile).string());
  contents.model = model.tensors();
  contents.optimizer = load_safetensors((fs::path(dir) / kOptimizerFile).string()).tensors();
  auto read_checked_json = [&](const std::string& file, const std::string& checksum_key) {
    std::string path = (fs::path(dir) / file).string();
    std::string text = read_text_file(path);
    auto recorded = model.metadata().find(checksum_key);
    if (recorded == model.metadata().end())
      BRAID_FAIL(model.path(), ": metadata lacks '", checksum_key, "' (not a braid checkpoint)");
    if (checksum_text(text) != recorded->second)
      BRAID_FAIL(path, ": checksum ", checksum_text(text), " differs from ", recorded->second,
                 " recorded in model.safetensors (corrupt or edited)");
    return text;
  };
  contents.config_json = read_checked_json(kConfigFile, kConfigChecksumKey);
  contents.state_json = read_checked_json(kStateFile, kStateChecksumKey);
  return contents;
}

std::optional<std::string> find_latest_checkpoint(const std::string& root_dir) {
  std::error_code error;
  if (!fs::is_directory(root_dir, error)) return std::nullopt;
  std::optional<int64_t> best_step;
  std::optional<std::string> best;
  for (const fs::directory_entry& entry : list_directory(root_dir)) {
    std::optional<int64_t> step = step_of_dir_name(entry.path().filename().string());
    if (!step || !entry.is_directory(error) || !has_all_files(entry.path())) continue;
    if (!best_step || *step > *best_step) {
      best_step = step;
      best = entry.path().string();
    }
  }
  return best;
}

void keep_last(const std::string& root_dir, int keep) {
  BRAID_CHECK(keep >= 1, "keep_last: must keep at least one checkpoint, got ", keep);
  std::error_code error;
  if (!fs::is_directory(root_dir, error)) return;
  std::vector<std::pair<int64_t, fs::path>> complete;
  std::vector<fs::path> stale;
  for (const fs::directory_entry& entry : list_directory(root_dir)) {
    if (!entry.is_directory(error)) continue;
    std::string name = entry.path().filename().string();
    std::optional<int64_t> step = step_of_dir_name(name);
    if (step && has_all_files(entry.path())) complete.emplace_back(*step, entry.path());
    std::optional<int64_t> writer = writer_of_temporary_dir_name(name);
    // Our own pid's temporary directories may belong to a save still running on another thread.
    if (writer && *writer != ::getpid() && !process_alive(*writer)) stale.push_back(entry.path());
  }
  std::sort(complete.begin(), complete.end(), [](const auto& a, const auto& b) { return a.first > b.first; });
  for (size_t i = size_t(keep); i < complete.size(); ++i) remove_directory(complete[i].second);
  for (const fs::path& dir : stale) remove_directory(dir);
}

}  // namespace braid
