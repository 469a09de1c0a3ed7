#include "tools/prepare_data.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstdio>
#include <exception>
#include <filesystem>
#include <fstream>
#include <limits>
#include <mutex>
#include <nlohmann/json.hpp>
#include <sstream>
#include <thread>

#include "runtime/error.h"
#include "runtime/philox.h"
#include "runtime/token_shard.h"

namespace braid {

namespace fs = std::filesystem;

namespace {

// Keeps the validation-split stream apart from other streams of the same seed.
constexpr uint32_t kValidationStream = 0x56414c49;  // "VALI"

bool is_input_file(const fs::path& path) {
  const std::string extension = path.extension().string();
  return extension == ".txt" || extension == ".json" || extension == ".jsonl";
}

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  BRAID_CHECK(in.good(), path, ": cannot open for reading");
  std::ostringstream content;
  content << in.rdbuf();
  BRAID_CHECK(!in.bad(), path, ": read failed");
  return content.str();
}

// nlohmann's messages start with "[json.exception.parse_error.101] "; the rest is the useful part.
std::string parse_error_text(const nlohmann::json::exception& error) {
  std::string text = error.what();
  size_t end_of_tag = text.find("] ");
  return end_of_tag == std::string::npos ? text : text.substr(end_of_tag + 2);
}

// A document element: a string, or an object with a "text" string. `where` names it in errors.
std::string document_from_json(const nlohmann::json& element, const std::string& where) {
  if (element.is_string()) return element.get<std::string>();
  if (element.is_object()) {
    auto text = element.find("text");
    if (text != element.end() && text->is_string()) return text->get<std::string>();
  }
  BRAID_FAIL(where, " is a JSON ", element.type_name(),
             ", expected a string or an object with a \"text\" string");
}

void write_text_file(const fs::path& path, const std::string& text) {
  const fs::path temporary = path.string() + ".tmp";
  {
    std::ofstream out(temporary, std::ios::binary | std::ios::trunc);
    BRAID_CHECK(out.good(), temporary.string(), ": cannot open for writing");
    out << text;
    out.close();
    BRAID_CHECK(!out.fail(), temporary.string(), ": write failed");
  }
  fs::rename(temporary, path);
}

bool is_prepared_output(const fs::path& path) {
  const std::string name = path.filename().string();
  const bool shard = (name.starts_with("train_") || name.starts_with("val_")) && name.ends_with(".bin");
  return shard || name == "meta.json";
}

// Prepared files already in `directory` (none if it does not exist yet).
std::vector<fs::path> existing_outputs(const fs::path& directory) {
  std::vector<fs::path> found;
  if (!fs::is_directory(directory)) return found;
  for (const fs::directory_entry& entry : fs::directory_iterator(directory))
    if (entry.is_regular_file() && is_prepared_output(entry.path())) found.push_back(entry.path());
  std::sort(found.begin(), found.end());
  return found;
}

// Encodes every document on `thread_count` threads into its own slot, so the result does not depend
// on scheduling; reports progress from the calling thread.
std::vector<std::vector<uint32_t>> encode_documents(
    std::vector<std::string>& texts, const DocumentEncoder& encoder, int thread_count,
    const std::function<void(const PrepareProgress&)>& on_progress) {
  std::vector<std::vector<uint32_t>> encoded(texts.size());
  PrepareProgress progress;
  progress.documents_total = texts.size();
  for (const std::string& text : texts) progress.bytes_total += text.size();

  std::atomic<size_t> next_document{0};
  std::atomic<uint64_t> documents_done{0}, bytes_done{0}, tokens_done{0};
  std::atomic<bool> failed{false};
  std::exception_ptr first_error;
  std::mutex mutex;
  std::condition_variable all_done;
  int threads_running = thread_count;

  auto work = [&] {
    try {
      for (size_t i = next_document++; i < texts.size() && !failed; i = next_document++) {
        std::vector<uint32_t> tokens = encoder.encode(texts[i]);
        std::vector<uint32_t>& document = encoded[i];
        document.reserve(tokens.size() + 2);
        document.push_back(encoder.bos_id);
        document.insert(document.end(), tokens.begin(), tokens.end());
        document.push_back(encoder.eos_id);
        bytes_done += texts[i].size();
        tokens_done += document.size();
        ++documents_done;
        std::string().swap(texts[i]);  // the text is no longer needed
      }
    } catch (...) {
      std::lock_guard lock(mutex);
      if (!first_error) first_error = std::current_exception();
      failed = true;
    }
    std::lock_guard lock(mutex);
    if (--threads_running == 0) all_done.notify_one();
  };

  const auto start = std::chrono::steady_clock::now();
  std::vector<std::thread> threads;
  for (int t = 0; t < thread_count; ++t) threads.emplace_back(work);
  auto report = [&] {
    progress.documents_done = documents_done;
    progress.bytes_done = bytes_done;
    progress.tokens_done = tokens_done;
    progress.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    if (on_progress) on_progress(progress);
  };
  {
    std::unique_lock lock(mutex);
    while (!all_done.wait_for(lock, std::chrono::milliseconds(100), [&] { return threads_running == 0; })) {
      lock.unlock();
      report();
      lock.lock();
    }
  }
  for (std::thread& thread : threads) thread.join();
  if (first_error) std::rethrow_exception(first_error);
  report();
  return encoded;
}

// Documents ranked by a Philox key of (seed, index) are moved to validation until it holds `target`
// tokens. Returns, per document, whether it is a validation document.
std::vector<bool> choose_validation(const std::vector<std::vector<uint32_t>>& documents, uint64_t target,
                                    uint64_t seed) {
  std::vector<bool> is_val(documents.size(), false);
  if (target == 0) return is_val;
  std::vector<std::pair<uint64_t, size_t>> ranked(documents.size());
  for (size_t i = 0; i < documents.size(); ++i) {
    philox::Block counter{{uint32_t(i), uint32_t(uint64_t(i) >> 32), 0u, kValidationStream}};
    philox::Block bits = philox::philox4x32_10(counter, uint32_t(seed), uint32_t(seed >> 32));
    ranked[i] = {uint64_t(bits.v[0]) | (uint64_t(bits.v[1]) << 32), i};
  }
  std::sort(ranked.begin(), ranked.end());
  uint64_t taken = 0;
  for (const auto& [key, index] : ranked) {
    if (taken >= target) break;
    is_val[index] = true;
    taken += documents[index].size();
  }
  return is_val;
}

// Writes the documents of one split as `prefix`_000000.bin, ... of at most `shard_tokens` tokens each.
std::vector<std::string> write_split(const fs::path& directory, const std::string& prefix,
                                     const std::vector<std::vector<uint32_t>>& documents,
                                     const std::vector<bool>& is_val, bool val, uint64_t shard_tokens) {
  std::vector<std::string> written;
  std::vector<uint32_t> buffer;
  auto flush = [&] {
    char name[32];
    std::snprintf(name, sizeof(name), "%s_%06zu.bin", prefix.c_str(), written.size());
    const std::string path = (directory / name).string();
    write_token_shard(path, buffer);
    written.push_back(path);
    buffer.clear();
  };
  for (size_t i = 0; i < documents.size(); ++i) {
    if (is_val[i] != val) continue;
    for (size_t start = 0; start < documents[i].size();) {
      const size_t count = std::min(documents[i].size() - start, size_t(shard_tokens - buffer.size()));
      buffer.insert(buffer.end(), documents[i].begin() + ptrdiff_t(start),
                    documents[i].begin() + ptrdiff_t(start + count));
      start += count;
      if (buffer.size() == shard_tokens) flush();
    }
  }
  if (!buffer.empty()) flush();
  return written;
}

}  // namespace

std::vector<std::string> expand_inputs(const std::vector<std::string>& inputs) {
  std::vector<std::string> files;
  for (const std::string& input : inputs) {
    std::error_code error;
    fs::file_status status = fs::status(input, error);
    BRAID_CHECK(fs::exists(status), input, ": no such file or directory");
    if (fs::is_directory(status)) {
      std::vector<std::string> found;
      for (const fs::directory_entry& entry : fs::recursive_directory_iterator(input))
        if (entry.is_regular_file() && is_input_file(entry.path())) found.push_back(entry.path().string());
      BRAID_CHECK(!found.empty(), input, ": directory holds no .txt, .json or .jsonl files");
      std::sort(found.begin(), found.end());
      files.insert(files.end(), found.begin(), found.end());
    } else {
      BRAID_CHECK(is_input_file(input), input, ": unsupported input, expected a .txt, .json or .jsonl file");
      files.push_back(input);
    }
  }
  return files;
}

std::vector<std::string> read_documents(const std::string& path) {
  const std::string content = read_file(path);
  const std::string extension = fs::path(path).extension().string();
  if (extension == ".txt") return {content};

  std::vector<std::string> documents;
  if (extension == ".json") {
    nlohmann::json array;
    try {
      array = nlohmann::json::parse(content);
    } catch (const nlohmann::json::parse_error& error) {
      BRAID_FAIL(path, ": invalid JSON: ", parse_error_text(error));
    }
    BRAID_CHECK(array.is_array(), path, ": expected a JSON array of documents, found a JSON ", array.type_name());
    for (size_t i = 0; i < array.size(); ++i)
      documents.push_back(document_from_json(array[i], path + ": element " + std::to_string(i)));
    return documents;
  }
  BRAID_CHECK(extension == ".jsonl", path, ": unsupported input, expected a .txt, .json or .jsonl file");
  std::istringstream lines(content);
  std::string line;
  for (size_t number = 1; std::getline(lines, line); ++number) {
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    const std::string where = path + ":" + std::to_string(number);
    nlohmann::json element;
    try {
      element = nlohmann::json::parse(line);
    } catch (const nlohmann::json::parse_error& error) {
      std::string text = parse_error_text(error);  // "... at line 1, column 9: ...": the line is ours
      if (size_t at = text.find("line 1, column"); at != std::string::npos) text.erase(at, 8);
      BRAID_FAIL(where, ": invalid JSON: ", text);
    }
    documents.push_back(document_from_json(element, where));
  }
  return documents;
}

PrepareSummary prepare_token_shards(const PrepareOptions& options, const DocumentEncoder& encoder,
                                    const std::function<void(const PrepareProgress&)>& on_progress) {
  BRAID_CHECK(!options.out_dir.empty(), "prepare_data: no output directory given");
  BRAID_CHECK(options.shard_tokens > 0 && options.shard_tokens <= uint64_t(std::numeric_limits<int32_t>::max()),
              "prepare_data: shard size ", options.shard_tokens, " tokens is outside [1, ",
              std::numeric_limits<int32_t>::max(), "]");
  BRAID_CHECK(options.val_fraction >= 0 && options.val_fraction < 1, "prepare_data: validation fraction ",
              options.val_fraction, " is outside [0, 1)");
  BRAID_CHECK(encoder.encode, "prepare_data: no encoder given");
  BRAID_CHECK(encoder.bos_id < encoder.vocab_size && encoder.eos_id < encoder.vocab_size,
              "prepare_data: BOS id ", encoder.bos_id, " or EOS id ", encoder.eos_id,
              " is not below the vocabulary size ", encoder.vocab_size);
  const fs::path out_dir(options.out_dir);
  std::vector<fs::path> stale = existing_outputs(out_dir);
  BRAID_CHECK(stale.empty() || options.overwrite, options.out_dir, ": already holds prepared data (",
              stale.empty() ? "" : stale.front().string(), "); remove it or use --overwrite");

  const std::vector<std::string> files = expand_inputs(options.inputs);
  std::vector<std::string> texts;
  std::vector<size_t> source_file;  // per document, for messages
  for (size_t f = 0; f < files.size(); ++f) {
    std::vector<std::string> documents = read_documents(files[f]);
    source_file.insert(source_file.end(), documents.size(), f);
    std::move(documents.begin(), documents.end(), std::back_inserter(texts));
  }
  BRAID_CHECK(!texts.empty(), "prepare_data: the inputs hold no documents");

  int thread_count = options.threads > 0 ? options.threads : int(std::thread::hardware_concurrency());
  thread_count = std::clamp(thread_count, 1, int(std::min<size_t>(texts.size(), 1024)));
  const std::vector<std::vector<uint32_t>> documents =
      encode_documents(texts, encoder, thread_count, on_progress);

  uint64_t total_tokens = 0;
  for (size_t i = 0; i < documents.size(); ++i) {
    for (uint32_t id : documents[i])
      BRAID_CHECK(id < encoder.vocab_size, files[source_file[i]], ": the encoder gave token id ", id,
                  ", not below the vocabulary size ", encoder.vocab_size);
    total_tokens += documents[i].size();
  }
  const uint64_t val_target =
      options.val_tokens ? *options.val_tokens : uint64_t(std::llround(options.val_fraction * double(total_tokens)));
  const std::vector<bool> is_val = choose_validation(documents, val_target, options.seed);
  PrepareSummary summary;
  for (size_t i = 0; i < documents.size(); ++i) {
    (is_val[i] ? summary.val_documents : summary.train_documents) += 1;
    (is_val[i] ? summary.val_tokens : summary.train_tokens) += documents[i].size();
  }
  BRAID_CHECK(summary.train_documents > 0, "prepare_data: a validation target of ", val_target,
              " tokens takes all ", documents.size(), " documents (", total_tokens,
              " tokens); lower the validation fraction or token count");

  fs::create_directories(out_dir);
  for (const fs::path& path : stale) fs::remove(path);
  summary.train_shards = write_split(out_dir, "train", documents, is_val, false, options.shard_tokens);
  summary.val_shards = write_split(out_dir, "val", documents, is_val, true, options.shard_tokens);

  auto file_names = [](const std::vector<std::string>& paths) {
    nlohmann::json names = nlohmann::json::array();
    for (const std::string& path : paths) names.push_back(fs::path(path).filename().string());
    return names;
  };
  nlohmann::json meta = {
      {"vocab_size", encoder.vocab_size},
      {"tokenizer", encoder.description},
      {"bos_id", encoder.bos_id},
      {"eos_id", encoder.eos_id},
      {"seed", options.seed},
      {"documents", {{"train", summary.train_documents}, {"val", summary.val_documents}}},
      {"tokens", {{"train", summary.train_tokens}, {"val", summary.val_tokens}}},
      {"shards", {{"train", file_names(summary.train_shards)}, {"val", file_names(summary.val_shards)}}},
      {"inputs", options.inputs},
  };
  write_text_file(out_dir / "meta.json",
                  meta.dump(2, ' ', false, nlohmann::json::error_handler_t::replace) + "\n");
  return summary;
}

}  // namespace braid
