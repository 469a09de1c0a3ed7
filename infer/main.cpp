// The infer binary: `build/infer <subcommand> (--checkpoint DIR | --preset FILE) [options]`.
//   generate  prompts from --prompt or --prompts-file, streamed as tokens arrive
//   ppl       NLL, perplexity and position-wise loss over token shards or a text file
//   mc        LM-Evaluation-Harness-style multiple choice from JSONL
//   niah      the needle-in-a-haystack grid
//   bench     prefill and decode speed, cache and peak memory (the paper's protocol by default)
// Results print as a table, or as JSON with --json FILE ('-' for stdout); progress goes to stderr.
// Every error ends the run with one line `error: ...` on stderr and exit code 1.
#include <omp.h>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <sstream>

#include "infer/model_loader.h"
#include "infer/multiple_choice.h"
#include "infer/needle.h"
#include "infer/perplexity.h"
#include "infer/session.h"
#include "infer/throughput.h"
#include "runtime/device.h"
#include "runtime/error.h"
#ifdef BRAID_CUDA
#include <cuda_runtime.h>

#include "runtime/cuda_check.h"
#endif

namespace braid::infer {
namespace {

using Json = nlohmann::ordered_json;

// Options every subcommand has.
struct Common {
  ModelSource model;
  std::string json;  // output path; "-" = stdout instead of the table
  std::string tokenizer;
  int threads = 0;
};

void add_common_options(CLI::App& command, Common& common, bool tokenizer) {
  command.add_option("--checkpoint", common.model.checkpoint,
                     "checkpoint step directory, or a run directory (its latest checkpoint)");
  command.add_option("--preset", common.model.preset, "model config JSON with random weights (speed only)");
  command.add_option("--init-seed", common.model.seed, "seed of a preset's random weights")->capture_default_str();
  command.add_option("--device", common.model.device, "cpu, cuda or cuda:N")->capture_default_str();
  command.add_option("--dtype", common.model.dtype, "fp32 or bf16 (CUDA only; the default there)");
  command.add_option("--json", common.json, "write the result as JSON to this file ('-': stdout, no table)");
  command.add_option("--threads", common.threads, "OpenMP threads (0 = default)");
  if (tokenizer)
    command.add_option("--tokenizer", common.tokenizer,
                       "GPT-2 vocabulary directory (encoder.json + vocab.bpe) or tokenizer file; default: the "
                       "checkpoint's training run's");
}

// Reports to stderr at most once a second, and always the final state.
class Progress {
 public:
  explicit Progress(std::string what) : what_(std::move(what)) {}
  void operator()(int64_t done, int64_t total) {
    const auto now = std::chrono::steady_clock::now();
    if (done < total && now - last_ < std::chrono::seconds(1)) return;
    last_ = now;
    std::fprintf(stderr, "%s: %lld / %lld\n", what_.c_str(), static_cast<long long>(done),
                 static_cast<long long>(total));
  }

 private:
  std::string what_;
  std::chrono::steady_clock::time_point last_{};
};

Tokenizer open_tokenizer(const Common& common, const LoadedModel& loaded) {
  const std::string path = common.tokenizer.empty() ? loaded.tokenizer : common.tokenizer;
  BRAID_CHECK(!path.empty(), "--tokenizer is required (the checkpoint names none)");
  return Tokenizer::open(path);
}

std::string read_text(const std::string& path, const std::string& what) {
  std::ifstream in(path, std::ios::binary);
  BRAID_CHECK(in.good(), what, " ", path, ": cannot open");
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

// Writes `json` where --json asks; returns whether the table should still be printed. Generated text
// can end inside a multi-byte character (byte-level tokens), so invalid UTF-8 is written as U+FFFD.
bool emit_json(const Common& common, const Json& json) {
  if (common.json.empty()) return true;
  const std::string text = json.dump(2, ' ', false, Json::error_handler_t::replace);
  if (common.json == "-") {
    std::cout << text << std::endl;
    return false;
  }
  std::ofstream out(common.json);
  BRAID_CHECK(out.good(), "--json ", common.json, ": cannot write");
  out << text << "\n";
  BRAID_CHECK(out.good(), "--json ", common.json, ": write failed");
  return true;
}

// The card's name, for benchmark records (DESIGN.md "Benchmarks").
std::string card_name(const Device& device) {
#ifdef BRAID_CUDA
  if (device.is_cuda()) {
    cudaDeviceProp card{};
    CUDA_CHECK(cudaGetDeviceProperties(&card, device.index));
    return card.name;
  }
#endif
  return device.to_string();
}

Json describe_model(const LoadedModel& loaded, const Common& common) {
  return {{"model", loaded.model->config().name},
          {"source", loaded.origin},
          {"device", loaded.model->device().to_string()},
          {"card", card_name(loaded.model->device())},
          {"dtype", dtype_name(loaded.model->activation_dtype())},
          {"parameters", loaded.model->parameter_count()},
          {"threads", common.threads > 0 ? common.threads : omp_get_max_threads()}};
}

LoadedModel open_model(const Common& common) {
  if (common.threads > 0) omp_set_num_threads(common.threads);
  LoadedModel loaded = load_model(common.model);
  std::fprintf(stderr, "model %s from %s on %s (%s)\n", loaded.model->config().name.c_str(), loaded.origin.c_str(),
               loaded.model->device().to_string().c_str(), dtype_name(loaded.model->activation_dtype()));
  return loaded;
}

void check_ids(const std::vector<uint32_t>& ids, const HybridLM& model, const std::string& what) {
  for (uint32_t id : ids)
    BRAID_CHECK(int64_t(id) < model.config().vocab_size, what, ": token id ", id,
                " is outside the model's vocabulary of ", model.config().vocab_size);
}

// ---- generate ----

struct GenerateArgs {
  std::vector<std::string> prompts;
  std::string prompts_file;
  int64_t max_new_tokens = 64;
  int64_t max_length = 0;
  int64_t prefill_chunk = 0;
  SamplingConfig sampling;
};

int run_generate(const Common& common, GenerateArgs args) {
  if (!args.prompts_file.empty()) {
    std::istringstream lines(read_text(args.prompts_file, "--prompts-file"));
    for (std::string line; std::getline(lines, line);) args.prompts.push_back(line);
  }
  BRAID_CHECK(!args.prompts.empty(), "give --prompt TEXT (repeatable) or --prompts-file FILE");
  BRAID_CHECK(args.max_new_tokens > 0, "--max-new-tokens must be positive, got ", args.max_new_tokens);
  LoadedModel loaded = open_model(common);
  const Tokenizer tokenizer = open_tokenizer(common, loaded);
  const bool stream = common.json != "-";
  Json outputs = Json::array();
  for (size_t p = 0; p < args.prompts.size(); ++p) {
    // Like training documents, a prompt starts after the begin-of-document token.
    std::vector<uint32_t> ids = {tokenizer.bos_id()};
    for (uint32_t id : tokenizer.encode(args.prompts[p])) ids.push_back(id);
    check_ids(ids, *loaded.model, "prompt " + std::to_string(p + 1));
    const int64_t needed = int64_t(ids.size()) + args.max_new_tokens;
    const int64_t capacity = args.max_length > 0 ? args.max_length : needed;
    BRAID_CHECK(needed <= capacity, "prompt ", p + 1, " has ", ids.size(), " tokens; with --max-new-tokens ",
                args.max_new_tokens, " it needs ", needed, " but the cache holds --max-length ", capacity);
    Session session(*loaded.model, SessionOptions{1, capacity, args.prefill_chunk, true});
    if (stream) std::cout << args.prompts[p] << std::flush;
    SamplingConfig sampling = args.sampling;
    sampling.seed = args.sampling.seed + p;
    const std::vector<uint32_t> generated =
        session.generate({ids}, args.max_new_tokens, sampling, [&](int64_t, uint32_t token) {
          if (stream) std::cout << tokenizer.decode({token}) << std::flush;
        })[0];
    if (stream) std::cout << "\n";
    outputs.push_back({{"prompt", args.prompts[p]},
                       {"completion", tokenizer.decode(generated)},
                       {"tokens", generated}});
  }
  Json result = describe_model(loaded, common);
  result["sampling"] = {{"temperature", args.sampling.temperature}, {"top_k", args.sampling.top_k},
                        {"top_p", args.sampling.top_p}, {"seed", args.sampling.seed}};
  result["outputs"] = outputs;
  emit_json(common, result);
  return 0;
}

// ---- ppl ----

struct PplArgs {
  std::string data, text;
  int64_t context = 0;
  PerplexityOptions options;
};

int run_ppl(const Common& common, PplArgs args) {
  BRAID_CHECK(args.data.empty() != args.text.empty(), "give exactly one of --data SHARDS and --text FILE");
  LoadedModel loaded = open_model(common);
  const int64_t context = args.context > 0 ? args.context : (loaded.train_seq_len > 0 ? loaded.train_seq_len : 1024);
  std::vector<Window> windows;
  if (!args.data.empty()) {
    windows = shard_windows(args.data, context, loaded.model->config().vocab_size);
  } else {
    const Tokenizer tokenizer = open_tokenizer(common, loaded);
    std::vector<uint32_t> tokens = {tokenizer.bos_id()};
    for (uint32_t id : tokenizer.encode(read_text(args.text, "--text"))) tokens.push_back(id);
    check_ids(tokens, *loaded.model, "--text " + args.text);
    windows = split_windows(tokens, context);
  }
  BRAID_CHECK(!windows.empty(), "nothing to evaluate: fewer than 2 tokens (or a shard shorter than --context + 1)");
  Progress progress("ppl tokens");
  args.options.progress = std::ref(progress);
  const PerplexityResult result = evaluate_perplexity(*loaded.model, windows, args.options);

  Json json = describe_model(loaded, common);
  json["context"] = context;
  json["train_seq_len"] = loaded.train_seq_len;
  json["tokens"] = result.tokens;
  json["windows"] = result.windows;
  json["nll"] = result.mean_nll();
  json["perplexity"] = result.perplexity();
  Json buckets = Json::array();
  for (const PositionBucket& bucket : result.buckets)
    buckets.push_back({{"begin", bucket.begin}, {"end", bucket.end}, {"count", bucket.count},
                       {"nll", bucket.mean_nll},
                       {"past_training_length", loaded.train_seq_len > 0 && bucket.end > loaded.train_seq_len}});
  json["positions"] = buckets;
  if (!emit_json(common, json)) return 0;
  std::printf("tokens %lld in %lld windows of %lld: NLL %.4f, perplexity %.3f\n",
              static_cast<long long>(result.tokens), static_cast<long long>(result.windows),
              static_cast<long long>(context), result.mean_nll(), result.perplexity());
  std::printf("%17s %10s %8s\n", "positions", "tokens", "NLL");
  for (const PositionBucket& bucket : result.buckets)
    std::printf("%8lld-%-8lld %10lld %8.4f%s\n", static_cast<long long>(bucket.begin),
                static_cast<long long>(bucket.end), static_cast<long long>(bucket.count), bucket.mean_nll,
                loaded.train_seq_len > 0 && bucket.end > loaded.train_seq_len ? "  (past the training length)" : "");
  return 0;
}

// ---- mc ----

struct McArgs {
  std::string data;
  MultipleChoiceOptions options;
};

int run_mc(const Common& common, McArgs args) {
  std::ifstream in(args.data);
  BRAID_CHECK(in.good(), "--data ", args.data, ": cannot open");
  const std::vector<ChoiceItem> items = parse_choice_jsonl(in, args.data);
  LoadedModel loaded = open_model(common);
  const Tokenizer tokenizer = open_tokenizer(common, loaded);
  if (args.options.max_length == 0) args.options.max_length = loaded.train_seq_len;
  std::vector<TokenizedItem> tokenized;
  for (const ChoiceItem& item : items) tokenized.push_back(tokenize_item(item, tokenizer));
  Progress progress("mc items");
  args.options.progress = std::ref(progress);
  const MultipleChoiceResult result = evaluate_multiple_choice(*loaded.model, tokenized, args.options);

  Json json = describe_model(loaded, common);
  json["data"] = args.data;
  json["items"] = items.size();
  json["acc"] = result.acc;
  json["acc_norm"] = result.acc_norm;
  Json per_item = Json::array();
  for (size_t i = 0; i < items.size(); ++i) {
    Json loglikelihoods = Json::array();
    for (const ChoiceScore& score : result.scores[i]) loglikelihoods.push_back(score.loglikelihood);
    per_item.push_back({{"line", items[i].line}, {"gold", items[i].gold}, {"predicted", result.predicted[i]},
                        {"predicted_norm", result.predicted_norm[i]}, {"loglikelihoods", loglikelihoods}});
  }
  json["per_item"] = per_item;
  if (!emit_json(common, json)) return 0;
  std::printf("items %zu: acc %.4f, acc_norm %.4f\n", items.size(), result.acc, result.acc_norm);
  return 0;
}

// ---- niah ----

struct NiahArgs {
  std::string haystack;
  NeedleOptions options;
};

int run_niah(const Common& common, NiahArgs args) {
  LoadedModel loaded = open_model(common);
  const Tokenizer tokenizer = open_tokenizer(common, loaded);
  const std::vector<uint32_t> haystack = tokenizer.encode(read_text(args.haystack, "--haystack"));
  check_ids(haystack, *loaded.model, "--haystack " + args.haystack);
  const HybridLM& model = *loaded.model;
  SamplingConfig greedy;
  greedy.temperature = 0;
  auto generate = [&](const std::vector<std::vector<uint32_t>>& prompts, int64_t count) {
    for (const std::vector<uint32_t>& prompt : prompts) check_ids(prompt, model, "needle prompt");
    Session session(model, SessionOptions{int64_t(prompts.size()), int64_t(prompts[0].size()) + count, 0, true});
    return session.generate(prompts, count, greedy);
  };
  Progress progress("niah cells");
  const std::vector<NeedleCell> cells = run_needle_grid(haystack, tokenizer, args.options, generate, std::ref(progress));

  Json json = describe_model(loaded, common);
  json["trials_per_cell"] = args.options.trials;
  json["seed"] = args.options.seed;
  json["lengths"] = args.options.lengths;
  json["depths"] = args.options.depths;
  Json grid = Json::array();
  int64_t correct = 0, trials = 0;
  for (const NeedleCell& cell : cells) {
    grid.push_back({{"length", cell.length}, {"depth", cell.depth}, {"correct", cell.correct},
                    {"trials", cell.trials}, {"accuracy", cell.accuracy()}, {"example", cell.example}});
    correct += cell.correct;
    trials += cell.trials;
  }
  json["grid"] = grid;
  json["accuracy"] = double(correct) / double(trials);
  if (!emit_json(common, json)) return 0;
  std::printf("%s", needle_table(cells, args.options).c_str());
  std::printf("overall accuracy %.1f%% (%lld / %lld)\n", 100.0 * double(correct) / double(trials),
              static_cast<long long>(correct), static_cast<long long>(trials));
  return 0;
}

// ---- bench ----

int run_bench(const Common& common, ThroughputOptions options) {
  LoadedModel loaded = open_model(common);
  const std::vector<ThroughputResult> results = measure_throughput(
      *loaded.model, options, [](const std::string& line) { std::fprintf(stderr, "bench: %s\n", line.c_str()); });
  Json json = describe_model(loaded, common);
  json["batch"] = options.batch;
  json["prompt"] = options.prompt;
  json["cuda_graph"] = options.cuda_graph;
  Json rows = Json::array();
  for (const ThroughputResult& r : results)
    rows.push_back({{"total", r.total}, {"prefill_tokens_per_s", r.prefill_tokens_per_second},
                    {"decode_tokens_per_s", r.decode_tokens_per_second}, {"ms_per_step", r.ms_per_step},
                    {"decode_steps", r.decode_steps}, {"cache_mib", double(r.cache_bytes) / (1 << 20)},
                    {"peak_mib", double(r.peak_bytes) / (1 << 20)}});
  json["results"] = rows;
  if (!emit_json(common, json)) return 0;
  std::printf("%s on %s (%s), batch %lld, prompt %lld\n", loaded.model->config().name.c_str(),
              card_name(loaded.model->device()).c_str(), dtype_name(loaded.model->activation_dtype()),
              static_cast<long long>(options.batch), static_cast<long long>(options.prompt));
  std::printf("%8s %14s %14s %10s %11s %11s\n", "total", "prefill tok/s", "decode tok/s", "ms/step", "cache MiB",
              "peak MiB");
  for (const ThroughputResult& r : results)
    std::printf("%8lld %14.1f %14.1f %10.3f %11.2f %11.1f\n", static_cast<long long>(r.total),
                r.prefill_tokens_per_second, r.decode_tokens_per_second, r.ms_per_step,
                double(r.cache_bytes) / (1 << 20), double(r.peak_bytes) / (1 << 20));
  return 0;
}

int run(int argc, char** argv) {
  CLI::App app{"braid infer: serve and evaluate hybrid attention + Mamba-2 models.\n"
               "  build/infer <generate|ppl|mc|niah|bench> (--checkpoint DIR | --preset FILE) [options]"};
  app.require_subcommand(1);

  Common generate_common, ppl_common, mc_common, niah_common, bench_common;
  GenerateArgs generate;
  CLI::App* generate_command = app.add_subcommand("generate", "sample continuations of prompts, streamed to stdout");
  add_common_options(*generate_command, generate_common, true);
  generate_command->add_option("--prompt", generate.prompts, "a prompt (repeatable)");
  generate_command->add_option("--prompts-file", generate.prompts_file, "a file of prompts, one per line");
  generate_command->add_option("--max-new-tokens", generate.max_new_tokens, "tokens generated per prompt")->capture_default_str();
  generate_command->add_option("--max-length", generate.max_length,
                               "tokens a sequence's cache holds (0 = prompt + new tokens)")->capture_default_str();
  generate_command->add_option("--prefill-chunk", generate.prefill_chunk, "prompt tokens per prefill pass (0 = all)");
  generate_command->add_option("--temperature", generate.sampling.temperature, "0 = greedy")->capture_default_str();
  generate_command->add_option("--top-k", generate.sampling.top_k, "keep the k most likely tokens (0 = all)")->capture_default_str();
  generate_command->add_option("--top-p", generate.sampling.top_p, "nucleus mass (1 = all)")->capture_default_str();
  generate_command->add_option("--seed", generate.sampling.seed, "sampling seed (prompt i uses seed + i)")->capture_default_str();

  PplArgs ppl;
  CLI::App* ppl_command = app.add_subcommand("ppl", "NLL, perplexity and position-wise loss over shards or a text file");
  add_common_options(*ppl_command, ppl_common, true);
  ppl_command->add_option("--data", ppl.data, "token shards: paths or globs, comma-separated");
  ppl_command->add_option("--text", ppl.text, "a text file (tokenized with --tokenizer)");
  ppl_command->add_option("--context", ppl.context, "positions per window (0 = the training length, else 1024)");
  ppl_command->add_option("--bucket", ppl.options.bucket, "positions per position-wise bucket")->capture_default_str();
  ppl_command->add_option("--batch", ppl.options.batch, "windows per forward pass")->capture_default_str();
  ppl_command->add_option("--max-tokens", ppl.options.max_tokens, "evaluate at most this many tokens (0 = all)");

  McArgs mc;
  CLI::App* mc_command = app.add_subcommand("mc", "multiple choice from JSONL {\"context\", \"choices\", \"gold\"}");
  add_common_options(*mc_command, mc_common, true);
  mc_command->add_option("--data", mc.data, "JSONL file, one item a line")->required();
  mc_command->add_option("--batch", mc.options.batch, "sequences per forward pass")->capture_default_str();
  mc_command->add_option("--max-length", mc.options.max_length,
                         "longer sequences lose context from the left (0 = the training length)");

  NiahArgs niah;
  niah.options.lengths = {1024, 2048, 4096, 8192, 16384};
  niah.options.depths = {0, 0.25, 0.5, 0.75, 1};
  niah.options.trials = 100;
  CLI::App* niah_command = app.add_subcommand("niah", "needle-in-a-haystack accuracy grid (lengths x depths)");
  add_common_options(*niah_command, niah_common, true);
  niah_command->add_option("--haystack", niah.haystack, "text file the haystack is built from")->required();
  niah_command->add_option("--lengths", niah.options.lengths, "prompt lengths in tokens")->delimiter(',')->capture_default_str();
  niah_command->add_option("--depths", niah.options.depths, "needle depths, fractions in [0, 1]")->delimiter(',')->capture_default_str();
  niah_command->add_option("--trials", niah.options.trials, "trials per cell")->capture_default_str();
  niah_command->add_option("--answer-tokens", niah.options.answer_tokens, "greedy tokens per answer")->capture_default_str();
  niah_command->add_option("--batch", niah.options.batch, "trials decoded together")->capture_default_str();
  niah_command->add_option("--seed", niah.options.seed, "seed of the cities and numbers")->capture_default_str();

  ThroughputOptions bench;
  CLI::App* bench_command = app.add_subcommand("bench", "prefill/decode speed and memory (batch 4, prompt 512, to 8K and 32K)");
  add_common_options(*bench_command, bench_common, false);
  bench_command->add_option("--batch", bench.batch, "sequences decoded together")->capture_default_str();
  bench_command->add_option("--prompt", bench.prompt, "random prompt tokens per sequence")->capture_default_str();
  bench_command->add_option("--totals", bench.totals, "tokens per sequence at the end")->delimiter(',')->capture_default_str();
  bench_command->add_option("--prefill-chunk", bench.prefill_chunk, "prompt tokens per prefill pass (0 = all)");
  bool no_cuda_graph = false;
  bench_command->add_flag("--no-cuda-graph", no_cuda_graph, "decode without capturing a CUDA graph");
  bench_command->add_option("--seed", bench.seed, "seed of the random prompts");

  try {
    app.parse(argc, argv);
  } catch (const CLI::Success& help) {  // --help
    return app.exit(help);
  } catch (const CLI::ParseError& error) {
    std::fprintf(stderr, "error: %s (see --help)\n", error.what());
    return 1;
  }
  if (*generate_command) return run_generate(generate_common, generate);
  if (*ppl_command) return run_ppl(ppl_common, ppl);
  if (*mc_command) return run_mc(mc_common, mc);
  if (*niah_command) return run_niah(niah_common, niah);
  bench.cuda_graph = !no_cuda_graph;
  return run_bench(bench_common, bench);
}

}  // namespace
}  // namespace braid::infer

int main(int argc, char** argv) {
  try {
    return braid::infer::run(argc, argv);
  } catch (const braid::Error& error) {
    std::fprintf(stderr, "error: %s\n", error.message().c_str());
    return 1;
  } catch (const std::exception& error) {
    std::fprintf(stderr, "error: %s\n", error.what());
    return 1;
  }
}
