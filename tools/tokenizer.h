// A byte-level BPE tokenizer (GPT-2 style): the byte-to-unicode mapping, GPT-2's pre-tokenization
// rule, merges by rank; loads GPT-2 vocabularies (encoder.json + vocab.bpe) and tiktoken rank files,
// and can train a new vocabulary on a corpus (bpe_trainer.h). Special tokens are matched only where
// asked (encode_with_specials), never inside ordinary text.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace braid {

class Tokenizer {
 public:
  // GPT-2's files: encoder.json (token string -> id) and vocab.bpe (merges, by rank).
  static Tokenizer load_gpt2(const std::string& encoder_json_path, const std::string& vocab_bpe_path);
  // tiktoken's rank file: one "<base64 bytes> <rank>" per line; `specials` name -> id appended.
  static Tokenizer load_tiktoken(const std::string& path, const std::map<std::string, uint32_t>& specials);
  // A tokenizer saved by `save` (our own format: tiktoken ranks + a JSON line of specials).
  static Tokenizer load(const std::string& path);
  // What the programs' --tokenizer / --vocab options name: a GPT-2 vocabulary directory
  // (encoder.json, vocab.bpe) or a file written by `save`.
  static Tokenizer open(const std::string& path);
  void save(const std::string& path) const;
  // Ordinary token i has the bytes tokens[i] and rank i (merged as tiktoken does: an adjacent pair
  // whose concatenation is a token merges at that token's rank); specials take the ids after them.
  static Tokenizer from_ranks(std::vector<std::string> tokens, const std::map<std::string, uint32_t>& specials);

  // Ordinary text: special-token strings are encoded as plain text.
  std::vector<uint32_t> encode(std::string_view text) const;
  // Text where the registered special-token strings (e.g. "<|endoftext|>") become their ids.
  std::vector<uint32_t> encode_with_specials(std::string_view text) const;
  // Exact inverse on bytes: decode(encode(s)) == s for any byte string, valid UTF-8 or not.
  std::string decode(const std::vector<uint32_t>& ids) const;

  size_t vocab_size() const;              // ids are in [0, vocab_size)
  uint32_t bos_id() const;                // begin-of-document token
  uint32_t eos_id() const;                // end-of-document token (GPT-2: both are <|endoftext|>)
  bool has_special(const std::string& name) const;
  uint32_t special_id(const std::string& name) const;

  struct Impl;
  explicit Tokenizer(std::shared_ptr<const Impl> impl);

 private:
  std::shared_ptr<const Impl> impl_;
};

// GPT-2's pre-tokenization: the pieces of `text` that BPE runs on, in order; they concatenate to
// `text`. Bytes that are not well-formed UTF-8 count as punctuation (the class of U+FFFD, which the
// reference encoder would see in their place).
std::vector<std::string_view> split_pretokens(std::string_view text);
// GPT-2's byte-to-unicode mapping: the code point that stands for `byte` in encoder.json and vocab.bpe.
char32_t gpt2_byte_to_code_point(uint8_t byte);

}  // namespace braid
