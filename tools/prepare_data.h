// Data preparation: documents -> token shards (runtime/token_shard.h) plus a meta.json description.
//
// Inputs: a .txt file is one document; a .json file holds an array whose elements are documents,
// each a string or an object with a "text" string; a .jsonl file holds one such element per line
// (blank lines skipped). A directory stands for its .txt/.json/.jsonl files, recursively, by path.
// Every document becomes BOS, its tokens, EOS. Documents keep input order within each split.
// Validation: documents are ranked by a Philox key of (seed, document index); whole documents are
// taken in that rank until the validation split holds at least the target token count, so the split
// depends only on the inputs, the seed and the target, never on threads.
// Output: DIR/train_000000.bin, ... and DIR/val_000000.bin, ..., each of at most shard_tokens tokens
// (a document may continue into the next shard), and DIR/meta.json.
// The whole corpus is held in memory while encoding (text, then tokens): fine for corpora of a few
// GB; prepare larger ones in parts.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace braid {

// How documents become token ids. `encode` is called from several threads at once.
struct DocumentEncoder {
  std::function<std::vector<uint32_t>(std::string_view)> encode;
  uint32_t bos_id = 0;
  uint32_t eos_id = 0;
  uint64_t vocab_size = 0;
  std::string description;  // recorded in meta.json, e.g. the tokenizer's files
};

struct PrepareOptions {
  std::vector<std::string> inputs;     // files or directories
  std::string out_dir;
  uint64_t shard_tokens = 100'000'000;  // at most INT32_MAX (the shard header's count is an int32)
  double val_fraction = 0.01;           // of all tokens; used when val_tokens is not set
  std::optional<uint64_t> val_tokens;   // an absolute validation target instead
  uint64_t seed = 0;
  int threads = 0;          // encoding threads; 0: one per hardware thread
  bool overwrite = false;   // replace shards and meta.json already in out_dir
};

struct PrepareProgress {
  uint64_t documents_done = 0, documents_total = 0;
  uint64_t bytes_done = 0, bytes_total = 0;  // document text encoded so far, of all
  uint64_t tokens_done = 0;                  // including BOS and EOS
  double seconds = 0;                        // since encoding began
};

struct PrepareSummary {
  std::vector<std::string> train_shards, val_shards;  // paths written
  uint64_t train_documents = 0, val_documents = 0;
  uint64_t train_tokens = 0, val_tokens = 0;
};

// The input files an input path stands for (a file itself; a directory's files, sorted by path).
std::vector<std::string> expand_inputs(const std::vector<std::string>& inputs);
// The documents of one input file; raises braid::Error naming the file (and line, for .jsonl).
std::vector<std::string> read_documents(const std::string& path);

// Reads, encodes (threads), splits and writes. `on_progress` is called from the calling thread about
// ten times a second while encoding and once when encoding is done.
PrepareSummary prepare_token_shards(const PrepareOptions& options, const DocumentEncoder& encoder,
                                    const std::function<void(const PrepareProgress&)>& on_progress = {});

}  // namespace braid
