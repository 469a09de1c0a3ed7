// The synthetic needle-in-a-haystack task of the niah acceptance test (test_niah_cuda.cpp): a word
// tokenizer, training documents built with the very prompt construction `infer niah` uses
// (infer/needle.h), a haystack text that no document holds, and a tiny attention model. Shared by the
// test and by the program that sweeps its hyperparameters, so both train on exactly the same data.
//
// Words are single tokens (every word the texts use, with its leading space, is one BPE token), so
// a prompt of a hundred tokens already holds a haystack of dozens of words around the needle and
// the question, and a tiny model trained on rows of that length is scored by `niah` on a real grid.
// The answer " 1234567." is copied token by token from the needle. In single-digit tokens (GPT-2's
// bytes) digits repeat inside most numbers, so the previous token does not say where the copy is,
// and a tiny model trained on the CPU for 4000 steps learnt no copying at all; with a token for
// every digit pair (NeedleCorpusOptions::digit_pairs) the same model retrieved 96% of the needles
// after 2500 steps.
//
// Half of the documents (by default) are needle documents: filler sentences, the needle at a random
// depth, the question and answer prefix, then the answer. Retrieval alone is a sparse signal (a few
// answer tokens a document), so the other documents are copy exercises: one to four numbers, a
// random gap of filler, the same numbers again. They grow content-based copying (induction) heads,
// which are the mechanism retrieval needs; the varying gap keeps the copy from being learnt as a
// fixed positional offset.
#pragma once

#include <algorithm>
#include <cctype>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "infer/needle.h"
#include "runtime/error.h"
#include "runtime/random_transform.h"
#include "runtime/token_shard.h"
#include "tools/tokenizer.h"

namespace braid::testing {

struct NeedleCorpusOptions {
  int64_t document_tokens = 96;  // every document is padded to this with <|endoftext|>: one training row
  int64_t documents = 50000;
  uint64_t seed = 1;
  double copy_share = 0.5;       // the fraction of documents that are copy exercises
  int64_t shortest_prompt = 40;  // needle prompts are [shortest, longest that fits with the answer] tokens
  bool digit_pairs = false;      // the tokenizer has a token for every pair of digits (see needle_word_tokenizer)
};

// The longest needle prompt a document of `document_tokens` holds with its answer and one
// <|endoftext|> after it: the longest prompt `niah` may be asked to score on the trained model.
inline int64_t longest_needle_prompt(int64_t document_tokens) { return document_tokens - 9 - 1; }

// A uniform integer in [0, bound) from position `draw` of the Philox stream of `seed`; advances `draw`.
inline int64_t draw_below(uint64_t seed, uint64_t& draw, int64_t bound) {
  return std::min(bound - 1, int64_t(philox::uniform_at(seed, draw++, 0, double(bound))));
}

// The words filler sentences are made of.
inline const std::vector<std::string>& filler_words() {
  static const std::vector<std::string> words = {
      "the",   "river",  "runs", "past",  "green", "hills", "and",   "old",  "stone", "walls", "birds", "sing", "over",
      "quiet", "fields", "of",   "grass", "near",  "a",     "small", "town", "wind",  "moves", "tall",  "trees"};
  return words;
}

// Bytes, then every prefix of every word the texts use (with a leading space, or capitalised at a
// sentence start), so that BPE merges each word into one token; <|endoftext|> last. With
// `digit_pairs`, also "00" to "99": a number is then mostly two-digit tokens (" 1234567" is " ",
// "12", "34", "56", "7"), which rarely repeat inside one number, so copying it token by token needs
// only the previous token as context.
inline Tokenizer needle_word_tokenizer(bool digit_pairs) {
  std::vector<std::string> tokens;
  for (int byte = 0; byte < 256; ++byte) tokens.emplace_back(1, char(byte));
  // The needle sentence and the question (infer/needle.cpp), and the cities needles name.
  std::vector<std::string> pieces = {" The", " special", " magic", " number", " is", "What", " the"};
  for (const std::string& city : infer::needle_cities()) pieces.push_back(" " + city);
  for (std::string word : filler_words()) {
    pieces.push_back(" " + word);
    word[0] = char(std::toupper(static_cast<unsigned char>(word[0])));
    pieces.push_back(word);
    pieces.push_back(" " + word);
  }
  if (digit_pairs)
    for (char first = '0'; first <= '9'; ++first)
      for (char second = '0'; second <= '9'; ++second) tokens.push_back({first, second});
  std::set<std::string> known(tokens.begin(), tokens.end());
  for (const std::string& piece : pieces)
    for (size_t n = 2; n <= piece.size(); ++n)
      if (known.insert(piece.substr(0, n)).second) tokens.push_back(piece.substr(0, n));
  const uint32_t end_of_text = uint32_t(tokens.size());
  Tokenizer tokenizer = Tokenizer::from_ranks(std::move(tokens), {{"<|endoftext|>", end_of_text}});
  for (const std::string& piece : pieces)
    BRAID_CHECK(tokenizer.encode(piece).size() == 1, "the word \"", piece, "\" is not one token");
  return tokenizer;
}

// `count` random filler words in sentences of 4 to 8 words; `draw` is the next position of the
// Philox stream of `seed`, advanced past the draws used.
inline std::string filler_text(uint64_t seed, uint64_t& draw, int64_t count) {
  const std::vector<std::string>& words = filler_words();
  std::string text;
  while (count > 0) {
    const int64_t sentence = 4 + draw_below(seed, draw, 5);
    for (int64_t i = 0; i < sentence && count > 0; ++i, --count) {
      std::string word = words[size_t(draw_below(seed, draw, int64_t(words.size())))];
      if (i == 0) word[0] = char(std::toupper(static_cast<unsigned char>(word[0])));
      text += (text.empty() ? "" : " ") + word;
    }
    text += ".";
  }
  return text;
}

// A haystack text of `words` filler words, for `niah --haystack`: its own seed, so no training
// document holds it.
inline std::string haystack_text(uint64_t seed, int64_t words) {
  uint64_t draw = 0;
  return filler_text(seed, draw, words);
}

// The documents, concatenated, one a row of options.document_tokens, then one <|endoftext|> (a row
// reads T + 1 tokens). Needle numbers come from infer::draw_needle, as in `niah`; the copy
// exercises' numbers from the same function at trials far past the needle documents'.
inline std::vector<uint32_t> needle_corpus(const Tokenizer& tokenizer, const NeedleCorpusOptions& options) {
  const int64_t longest = longest_needle_prompt(options.document_tokens);
  BRAID_CHECK(options.shortest_prompt <= longest, "needle prompts of ", options.shortest_prompt,
              " tokens do not fit documents of ", options.document_tokens, " tokens");
  constexpr uint64_t kCopyTrials = uint64_t(1) << 32;  // copy numbers: trials no needle document reaches
  constexpr int64_t kNumberTokens = 9;                 // " 1234567." in single digits, the most
  constexpr int64_t kLongestGap = 24;                  // filler tokens between a copy's two halves
  const uint32_t end_of_text = tokenizer.eos_id();
  std::vector<uint32_t> tokens;
  tokens.reserve(size_t(options.documents * options.document_tokens + 1));
  uint64_t draw = 0;
  for (int64_t d = 0; d < options.documents; ++d) {
    std::vector<uint32_t> document;
    if (philox::uniform_at(options.seed, draw++, 0, 1) < options.copy_share) {
      const int64_t most = std::min<int64_t>(4, options.document_tokens / (2 * kNumberTokens));
      const int64_t count = 1 + draw_below(options.seed, draw, most);
      std::string numbers;
      for (int64_t k = 0; k < count; ++k)
        numbers += " " + infer::draw_needle(options.seed, kCopyTrials + uint64_t(d * 4 + k)).number + ".";
      const std::vector<uint32_t> copied = tokenizer.encode(numbers);
      const int64_t room = std::min(kLongestGap, options.document_tokens - 2 * int64_t(copied.size()));
      const int64_t gap = draw_below(options.seed, draw, room + 1);
      std::vector<uint32_t> filler = tokenizer.encode(" " + filler_text(options.seed, draw, gap));
      filler.resize(size_t(gap));  // words are one token each, so `gap` words are at least `gap` tokens
      document = copied;
      document.insert(document.end(), filler.begin(), filler.end());
      document.insert(document.end(), copied.begin(), copied.end());
    } else {
      const infer::Needle needle = infer::draw_needle(options.seed, uint64_t(d));
      const std::vector<uint32_t> haystack = tokenizer.encode(filler_text(options.seed, draw, longest));
      const int64_t length =
          options.shortest_prompt + draw_below(options.seed, draw, longest - options.shortest_prompt + 1);
      const double depth = philox::uniform_at(options.seed, draw++, 0, 1);
      document = infer::build_needle_prompt(haystack, needle, depth, length, tokenizer).tokens;
      const std::vector<uint32_t> answer = tokenizer.encode(" " + needle.number + ".");
      BRAID_CHECK(int64_t(answer.size()) <= kNumberTokens, "the answer \" ", needle.number, ".\" is ", answer.size(),
                  " tokens, more than ", kNumberTokens);
      document.insert(document.end(), answer.begin(), answer.end());
    }
    document.resize(size_t(options.document_tokens), end_of_text);
    tokens.insert(tokens.end(), document.begin(), document.end());
  }
  tokens.push_back(end_of_text);
  return tokens;
}

// The model config of a tiny attention model ("T" layers) over `vocab_size` tokens.
struct TinyModelOptions {
  int64_t d_model = 64;
  int64_t n_heads = 4;  // head_dim = d_model / n_heads
  int64_t d_ffn = 128;
  std::string pattern = "TT";
};

inline std::string tiny_model_json(const TinyModelOptions& model, size_t vocab_size) {
  BRAID_CHECK(model.n_heads > 0 && model.d_model % model.n_heads == 0, "d_model ", model.d_model,
              " is not a multiple of ", model.n_heads, " heads");
  std::ostringstream json;
  json << R"({"name": "niah-tiny", "vocab_size": )" << vocab_size << R"(, "d_model": )" << model.d_model
       << R"(, "pattern": ")" << model.pattern << R"(", "ffn": {"d_ffn": )" << model.d_ffn
       << R"(}, "attention": {"n_heads": )" << model.n_heads << R"(, "n_kv_heads": )" << model.n_heads
       << R"(, "head_dim": )" << model.d_model / model.n_heads
       << R"(, "rope": {"theta": 10000, "llama3_scaling": false}}})";
  return json.str();
}

// Everything a training run and a `niah` run read, under `dir`: tokenizer.txt, train.bin, val.bin
// (other seeds' documents), haystack.txt (400 words of yet another seed) and model.json.
inline void write_needle_task(const std::filesystem::path& dir, const NeedleCorpusOptions& corpus,
                              const TinyModelOptions& model) {
  std::filesystem::create_directories(dir);
  const Tokenizer tokenizer = needle_word_tokenizer(corpus.digit_pairs);
  tokenizer.save((dir / "tokenizer.txt").string());
  write_token_shard((dir / "train.bin").string(), needle_corpus(tokenizer, corpus));
  NeedleCorpusOptions validation = corpus;
  validation.documents = 256;
  validation.seed = corpus.seed + 1000;
  write_token_shard((dir / "val.bin").string(), needle_corpus(tokenizer, validation));
  std::ofstream(dir / "haystack.txt") << haystack_text(corpus.seed + 2000, 400);
  std::ofstream(dir / "model.json") << tiny_model_json(model, tokenizer.vocab_size());
  BRAID_CHECK(std::ifstream(dir / "model.json").good(), dir.string(), ": cannot write the needle task");
}

}  // namespace braid::testing
