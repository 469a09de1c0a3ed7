// Data preparation with a byte-level encoder (id = byte, BOS 256, EOS 257): BOS/EOS placement,
// documents in order across shards, the seeded validation split, the three input formats, and one
// clear message per malformed input.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <iomanip>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

#include "runtime/error.h"
#include "runtime/token_shard.h"
#include "tools/prepare_data.h"
#include "tests/test_util.h"

namespace braid {
namespace {

using testing::error_of;

namespace fs = std::filesystem;

constexpr uint32_t kBos = 256, kEos = 257;

DocumentEncoder byte_encoder() {
  return {[](std::string_view text) {
            std::vector<uint32_t> ids;
            for (unsigned char byte : text) ids.push_back(byte);
            return ids;
          },
          kBos, kEos, 258, "bytes"};
}

std::vector<uint32_t> framed(const std::string& text) {
  std::vector<uint32_t> ids = {kBos};
  for (unsigned char byte : text) ids.push_back(byte);
  ids.push_back(kEos);
  return ids;
}

// Documents back from a token stream of BOS text EOS runs.
std::vector<std::string> split_documents(const std::vector<uint32_t>& tokens) {
  std::vector<std::string> documents;
  for (size_t i = 0; i < tokens.size(); ++i) {
    EXPECT_EQ(tokens[i], kBos) << "token " << i;
    std::string text;
    for (++i; i < tokens.size() && tokens[i] != kEos; ++i) text.push_back(char(tokens[i]));
    documents.push_back(text);
  }
  return documents;
}

std::vector<uint32_t> concatenated(const std::vector<std::string>& shards) {
  std::vector<uint32_t> all;
  for (const std::string& path : shards) {
    std::vector<uint32_t> tokens = TokenShard::open(path).tokens();
    all.insert(all.end(), tokens.begin(), tokens.end());
  }
  return all;
}

std::string file_text(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

class PrepareDataTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           ("braid_prepare_data_" + std::to_string(getpid()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::string path(const std::string& name) const { return (dir_ / name).string(); }
  void write(const std::string& name, const std::string& text) const {
    fs::create_directories((dir_ / name).parent_path());
    std::ofstream(path(name), std::ios::binary) << text;
  }
  // `count` distinct documents of varying length, as a JSON array file.
  std::vector<std::string> write_many(const std::string& name, size_t count) const {
    std::vector<std::string> documents;
    for (size_t i = 0; i < count; ++i)
      documents.push_back("doc " + std::to_string(i) + std::string(i % 13, char('a' + i % 26)));
    write(name, nlohmann::json(documents).dump());
    return documents;
  }
  PrepareOptions options(const std::string& out, std::vector<std::string> inputs) const {
    PrepareOptions o;
    o.inputs = std::move(inputs);
    o.out_dir = path(out);
    o.val_fraction = 0;
    o.threads = 2;
    return o;
  }
  fs::path dir_;
};

TEST_F(PrepareDataTest, BosBeforeAndEosAfterEachDocument) {
  write("docs.json", R"(["ab", "", "xyz"])");
  PrepareSummary summary = prepare_token_shards(options("out", {path("docs.json")}), byte_encoder());
  ASSERT_EQ(summary.train_shards, std::vector<std::string>{path("out/train_000000.bin")});
  EXPECT_TRUE(summary.val_shards.empty());
  EXPECT_EQ(TokenShard::open(summary.train_shards[0]).tokens(),
            (std::vector<uint32_t>{256, 'a', 'b', 257, 256, 257, 256, 'x', 'y', 'z', 257}));
  EXPECT_EQ(summary.train_documents, 3u);
  EXPECT_EQ(summary.train_tokens, 11u);
}

TEST_F(PrepareDataTest, DocumentsContinueAcrossShardsInOrder) {
  std::vector<std::string> documents = write_many("docs.json", 40);
  PrepareOptions o = options("out", {path("docs.json")});
  o.shard_tokens = 37;
  PrepareSummary summary = prepare_token_shards(o, byte_encoder());
  std::vector<uint32_t> expected;
  for (const std::string& document : documents) {
    std::vector<uint32_t> ids = framed(document);
    expected.insert(expected.end(), ids.begin(), ids.end());
  }
  ASSERT_EQ(summary.train_shards.size(), (expected.size() + 36) / 37);
  for (size_t i = 0; i < summary.train_shards.size(); ++i) {
    std::ostringstream name;
    name << "out/train_" << std::setw(6) << std::setfill('0') << i << ".bin";
    EXPECT_EQ(summary.train_shards[i], path(name.str()));
    const size_t size = TokenShard::open(summary.train_shards[i]).size();
    EXPECT_EQ(size, i + 1 < summary.train_shards.size() ? 37 : expected.size() - 37 * i);
  }
  EXPECT_EQ(concatenated(summary.train_shards), expected);
}

TEST_F(PrepareDataTest, TextJsonAndJsonlInputs) {
  write("in/a.txt", "First line.\n\nSecond paragraph, same document.\n");
  write("in/b.json", R"(["one", {"text": "two", "id": 5}, "th\u00e9"])");
  write("in/c.jsonl", "\"four\"\n\n{\"text\": \"five\\nlines\"}\r\n   \n\"six\"");
  write("in/notes.md", "ignored: not an input type");
  EXPECT_EQ(read_documents(path("in/a.txt")),
            std::vector<std::string>{"First line.\n\nSecond paragraph, same document.\n"});
  EXPECT_EQ(read_documents(path("in/b.json")), (std::vector<std::string>{"one", "two", "th\xc3\xa9"}));
  EXPECT_EQ(read_documents(path("in/c.jsonl")), (std::vector<std::string>{"four", "five\nlines", "six"}));
  EXPECT_EQ(expand_inputs({path("in")}),
            (std::vector<std::string>{path("in/a.txt"), path("in/b.json"), path("in/c.jsonl")}));

  PrepareSummary summary = prepare_token_shards(options("out", {path("in")}), byte_encoder());
  EXPECT_EQ(split_documents(concatenated(summary.train_shards)),
            (std::vector<std::string>{"First line.\n\nSecond paragraph, same document.\n", "one", "two",
                                      "th\xc3\xa9", "four", "five\nlines", "six"}));
}

TEST_F(PrepareDataTest, MalformedInputsNameTheFile) {
  write("broken.json", R"(["fine", "unterminated)");
  EXPECT_EQ(error_of([&] { read_documents(path("broken.json")); }).rfind(path("broken.json") + ": invalid JSON: ", 0),
            0u)
      << error_of([&] { read_documents(path("broken.json")); });
  write("object.json", R"({"text": "not an array"})");
  EXPECT_EQ(error_of([&] { read_documents(path("object.json")); }),
            path("object.json") + ": expected a JSON array of documents, found a JSON object");
  write("numbers.json", R"(["ok", 3])");
  EXPECT_EQ(error_of([&] { read_documents(path("numbers.json")); }),
            path("numbers.json") + ": element 1 is a JSON number, expected a string or an object with a \"text\" string");
  write("lines.jsonl", "\"ok\"\n{\"txt\": \"x\"}\n");
  EXPECT_EQ(error_of([&] { read_documents(path("lines.jsonl")); }),
            path("lines.jsonl") + ":2 is a JSON object, expected a string or an object with a \"text\" string");
  write("bad.jsonl", "\"ok\"\n\n{\"text\": nope}\n");
  EXPECT_EQ(error_of([&] { read_documents(path("bad.jsonl")); }).rfind(path("bad.jsonl") + ":3: invalid JSON: ", 0), 0u);
  write("table.csv", "a,b\n");
  EXPECT_EQ(error_of([&] { expand_inputs({path("table.csv")}); }),
            path("table.csv") + ": unsupported input, expected a .txt, .json or .jsonl file");
  EXPECT_EQ(error_of([&] { expand_inputs({path("absent.json")}); }), path("absent.json") + ": no such file or directory");
  // The whole preparation stops at the bad file and writes nothing.
  EXPECT_EQ(error_of([&] { prepare_token_shards(options("out", {path("numbers.json")}), byte_encoder()); }),
            path("numbers.json") + ": element 1 is a JSON number, expected a string or an object with a \"text\" string");
  EXPECT_FALSE(fs::exists(path("out/meta.json")));
}

TEST_F(PrepareDataTest, ValidationSplitIsDeterministicBySeed) {
  std::vector<std::string> documents = write_many("docs.json", 300);
  uint64_t total = 0;
  for (const std::string& document : documents) total += document.size() + 2;
  auto run = [&](const std::string& out, uint64_t seed, int threads) {
    PrepareOptions o = options(out, {path("docs.json")});
    o.val_fraction = 0.1;
    o.seed = seed;
    o.threads = threads;
    return prepare_token_shards(o, byte_encoder());
  };
  PrepareSummary a = run("a", 1, 1), b = run("b", 1, 4), c = run("c", 2, 3);
  ASSERT_EQ(a.val_shards.size(), 1u);
  // Same seed: byte-identical files whatever the thread count.
  EXPECT_EQ(file_text(a.val_shards[0]), file_text(b.val_shards[0]));
  EXPECT_EQ(file_text(a.train_shards[0]), file_text(b.train_shards[0]));
  const std::vector<std::string> val_a = split_documents(concatenated(a.val_shards));
  const std::vector<std::string> train_a = split_documents(concatenated(a.train_shards));
  EXPECT_NE(split_documents(concatenated(c.val_shards)), val_a);

  // Whole documents, each in exactly one split, input order kept within each.
  std::vector<std::string> train_expected, val_expected;
  std::set<std::string> val_set(val_a.begin(), val_a.end());
  for (const std::string& document : documents)
    (val_set.count(document) ? val_expected : train_expected).push_back(document);
  EXPECT_EQ(val_a, val_expected);
  EXPECT_EQ(train_a, train_expected);
  // At least 10% of the tokens, and the last document taken was needed.
  const uint64_t target = uint64_t(std::llround(0.1 * double(total)));
  EXPECT_GE(a.val_tokens, target);
  EXPECT_LT(a.val_tokens, target + 4 + 3 + 12 + 2);  // + the longest document
  EXPECT_EQ(a.val_tokens + a.train_tokens, total);
  EXPECT_EQ(a.val_documents + a.train_documents, 300u);
  EXPECT_EQ(a.val_documents, val_a.size());
}

TEST_F(PrepareDataTest, ValidationTokenTargetAndItsLimits) {
  write_many("docs.json", 50);
  PrepareOptions o = options("out", {path("docs.json")});
  o.val_tokens = 100;
  PrepareSummary summary = prepare_token_shards(o, byte_encoder());
  EXPECT_GE(summary.val_tokens, 100u);
  EXPECT_LT(summary.val_tokens, 100u + 19);
  EXPECT_EQ(TokenShard::open(path("out/val_000000.bin")).size(), summary.val_tokens);

  o.out_dir = path("all");
  o.val_tokens = 100000;
  EXPECT_EQ(error_of([&] { prepare_token_shards(o, byte_encoder()); }),
            "prepare_data: a validation target of 100000 tokens takes all 50 documents (" +
                std::to_string(summary.val_tokens + summary.train_tokens) +
                " tokens); lower the validation fraction or token count");
}

TEST_F(PrepareDataTest, MetaJsonDescribesTheShards) {
  write("docs.json", R"(["ab", "cde", "f", "ghij"])");
  PrepareOptions o = options("out", {path("docs.json")});
  o.val_tokens = 1;
  o.seed = 3;
  PrepareSummary summary = prepare_token_shards(o, byte_encoder());
  nlohmann::json meta = nlohmann::json::parse(file_text(path("out/meta.json")));
  EXPECT_EQ(meta["vocab_size"], 258);
  EXPECT_EQ(meta["bos_id"], 256);
  EXPECT_EQ(meta["eos_id"], 257);
  EXPECT_EQ(meta["tokenizer"], "bytes");
  EXPECT_EQ(meta["seed"], 3);
  EXPECT_EQ(meta["documents"]["train"], 3);
  EXPECT_EQ(meta["documents"]["val"], 1);
  EXPECT_EQ(meta["tokens"]["train"], summary.train_tokens);
  EXPECT_EQ(meta["tokens"]["val"], summary.val_tokens);
  EXPECT_EQ(summary.train_tokens + summary.val_tokens, 4u * 2 + 10);
  EXPECT_EQ(meta["shards"]["train"], nlohmann::json({"train_000000.bin"}));
  EXPECT_EQ(meta["shards"]["val"], nlohmann::json({"val_000000.bin"}));
  EXPECT_EQ(meta["inputs"], nlohmann::json({path("docs.json")}));
}

TEST_F(PrepareDataTest, ExistingOutputNeedsOverwrite) {
  write_many("docs.json", 30);
  PrepareOptions o = options("out", {path("docs.json")});
  o.shard_tokens = 50;
  const size_t first_shards = prepare_token_shards(o, byte_encoder()).train_shards.size();
  ASSERT_GT(first_shards, 2u);
  EXPECT_EQ(error_of([&] { prepare_token_shards(o, byte_encoder()); }),
            path("out") + ": already holds prepared data (" + path("out/meta.json") +
                "); remove it or use --overwrite");
  o.overwrite = true;
  o.shard_tokens = 1000;
  PrepareSummary summary = prepare_token_shards(o, byte_encoder());
  EXPECT_EQ(summary.train_shards.size(), 1u);
  EXPECT_FALSE(fs::exists(path("out/train_000001.bin"))) << "a stale shard from the first run was left";
}

TEST_F(PrepareDataTest, ProgressReportsEveryTokenAndEncoderIdsAreChecked) {
  std::vector<std::string> documents = write_many("docs.json", 20);
  PrepareProgress last;
  int calls = 0;
  PrepareSummary summary = prepare_token_shards(options("out", {path("docs.json")}), byte_encoder(),
                                                [&](const PrepareProgress& progress) {
                                                  last = progress;
                                                  ++calls;
                                                });
  EXPECT_GE(calls, 1);
  EXPECT_EQ(last.documents_done, 20u);
  EXPECT_EQ(last.documents_total, 20u);
  EXPECT_EQ(last.tokens_done, summary.train_tokens);
  uint64_t bytes = 0;
  for (const std::string& document : documents) bytes += document.size();
  EXPECT_EQ(last.bytes_done, bytes);
  EXPECT_EQ(last.bytes_total, bytes);

  DocumentEncoder small = byte_encoder();
  small.vocab_size = 260;
  small.encode = [](std::string_view text) { return std::vector<uint32_t>(text.size(), 300); };
  EXPECT_EQ(error_of([&] { prepare_token_shards(options("bad", {path("docs.json")}), small); }),
            path("docs.json") + ": the encoder gave token id 300, not below the vocabulary size 260");
}

}  // namespace
}  // namespace braid
