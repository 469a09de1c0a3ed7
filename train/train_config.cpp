#include "train/train_config.h"

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include <fstream>
#include <iostream>
#include <sstream>

#include "runtime/error.h"
#include "runtime/suggest.h"

namespace braid {

void add_train_options(CLI::App& app, TrainConfig& c, std::string& config_file) {
  app.add_option("--config", config_file, "JSON run config: {\"option-name\": value, ...}; the command line wins");
  // A repeated option takes its last value, so the command line overrides a --config file.
  auto text = [&](const char* name, std::string& field, const char* help) {
    app.add_option(name, field, help)->capture_default_str()->multi_option_policy(CLI::MultiOptionPolicy::TakeLast);
  };
  auto number = [&](const char* name, auto& field, const char* help) {
    app.add_option(name, field, help)->capture_default_str()->multi_option_policy(CLI::MultiOptionPolicy::TakeLast);
  };
  text("--model", c.model, "model config JSON (configs/models/<scale>/<family>.json)");
  text("--data", c.data, "training token shards: glob(s), comma-separated");
  text("--val", c.val, "validation token shards: glob(s), comma-separated");
  text("--tokenizer", c.tokenizer, "GPT-2 vocabulary directory (encoder.json + vocab.bpe), for text samples");
  text("--out", c.out, "run directory: checkpoints and metrics.jsonl");
  text("--resume", c.resume, "continue from a checkpoint directory, or from a run directory's latest");
  text("--device", c.device, "cpu, cuda or cuda:N");
  text("--dtype", c.dtype, "fp32 or bf16 (CUDA only; the default there)");
  number("--seq-len", c.seq_len, "context length T");
  number("--micro-batch", c.micro_batch, "rows per forward/backward pass");
  number("--batch-tokens", c.batch_tokens, "tokens per optimizer step, reached by gradient accumulation (0 = one micro-batch)");
  number("--steps", c.steps, "budget in optimizer steps");
  number("--tokens", c.tokens, "budget in training tokens");
  number("--flops", c.flops, "budget in FLOPs (MODEL.md section 7): tokens = flops / flops-per-token");
  number("--lr", c.lr, "peak learning rate");
  number("--min-lr-ratio", c.min_lr_ratio, "final learning rate as a fraction of the peak");
  text("--schedule", c.schedule, "wsd (warmup-stable-decay), cosine or constant");
  number("--warmup", c.warmup, "warmup fraction of the steps");
  number("--cooldown", c.cooldown, "wsd: final linear decay fraction of the steps");
  number("--weight-decay", c.weight_decay, "AdamW decoupled weight decay (matrices only)");
  number("--beta1", c.beta1, "AdamW beta1");
  number("--beta2", c.beta2, "AdamW beta2");
  number("--adam-eps", c.adam_eps, "AdamW epsilon");
  number("--clip", c.clip, "global gradient-norm clip (0 = off)");
  app.add_flag("--recompute", c.recompute, "recompute each block's activations in backward");
  number("--seed", c.seed, "seed of initialization, data order and samples");
  app.add_flag("--deterministic", c.deterministic, "bit-reproducible runs (fixed reduction orders; CPU kernels always are)");
  number("--threads", c.threads, "OpenMP threads (0 = default)");
  number("--log-every", c.log_every, "console/metrics line every N steps");
  number("--eval-every", c.eval_every, "validation loss every N steps (0 = only at the end)");
  number("--eval-batches", c.eval_batches, "validation micro-batches per evaluation");
  number("--sample-every", c.sample_every, "print a text sample every N steps (0 = only at the end)");
  number("--sample-tokens", c.sample_tokens, "tokens per text sample");
  number("--samples", c.samples, "text samples printed each time (different seeds)");
  text("--prompt", c.prompt, "text the samples start from (empty: a document start)");
  number("--checkpoint-every", c.checkpoint_every, "checkpoint every N steps (0 = only at the end)");
  number("--keep", c.keep, "checkpoints to keep");
  number("--max-bad-steps", c.max_bad_steps, "stop after this many consecutive steps with a non-finite loss or gradient");
  number("--peak-tflops", c.peak_tflops, "the device's dense peak in TFLOP/s, for MFU (0 = unknown)");
  text("--metrics", c.metrics, "metrics JSONL path (default <out>/metrics.jsonl)");
  app.add_flag("--zero1", c.zero1, "data parallel: shard AdamW moments over the ranks (ZeRO-1)");
  number("--bucket-mb", c.bucket_mb, "data parallel: gradient bucket size in MiB");
  number("--collective-timeout", c.collective_timeout,
         "data parallel: seconds to wait for the other ranks before aborting the job");
}

std::vector<std::string> run_config_arguments(const std::string& path, const CLI::App& app) {
  std::ifstream file(path);
  BRAID_CHECK(file.good(), path, ": cannot open the run config");
  nlohmann::json json;
  try {
    json = nlohmann::json::parse(file);
  } catch (const nlohmann::json::parse_error& error) {
    BRAID_FAIL(path, ": malformed JSON: ", error.what());
  }
  BRAID_CHECK(json.is_object(), path, ": a run config is a JSON object of option names and values");
  std::vector<std::string> names;
  for (const CLI::Option* option : app.get_options())
    if (option->get_name() != "--help" && option->get_name() != "--config")
      names.push_back(option->get_name().substr(2));
  std::vector<std::string> arguments;
  for (const auto& [key, value] : json.items()) {
    std::string name = key;
    std::replace(name.begin(), name.end(), '_', '-');
    BRAID_CHECK(std::find(names.begin(), names.end(), name) != names.end(), path, ": unknown option \"", key,
                "\"", suggestion(name, names));
    if (value.is_boolean()) {
      if (value.get<bool>()) arguments.push_back("--" + name);
    } else if (value.is_string()) {
      arguments.push_back("--" + name + "=" + value.get<std::string>());
    } else if (value.is_number()) {
      arguments.push_back("--" + name + "=" + value.dump());
    } else {
      BRAID_FAIL(path, ": option \"", key, "\" must be a string, number or boolean, got ", value.dump());
    }
  }
  return arguments;
}

std::string train_config_to_json(const TrainConfig& c) {
  nlohmann::ordered_json json = {
      {"model", c.model}, {"data", c.data}, {"val", c.val}, {"tokenizer", c.tokenizer}, {"out", c.out},
      {"device", c.device}, {"dtype", c.dtype}, {"seq_len", c.seq_len}, {"micro_batch", c.micro_batch},
      {"batch_tokens", c.batch_tokens}, {"steps", c.steps}, {"tokens", c.tokens}, {"flops", c.flops},
      {"lr", c.lr}, {"min_lr_ratio", c.min_lr_ratio}, {"schedule", c.schedule}, {"warmup", c.warmup},
      {"cooldown", c.cooldown}, {"weight_decay", c.weight_decay}, {"beta1", c.beta1}, {"beta2", c.beta2},
      {"adam_eps", c.adam_eps}, {"clip", c.clip}, {"recompute", c.recompute}, {"seed", c.seed},
      {"deterministic", c.deterministic}, {"threads", c.threads}, {"log_every", c.log_every},
      {"eval_every", c.eval_every}, {"eval_batches", c.eval_batches}, {"sample_every", c.sample_every},
      {"sample_tokens", c.sample_tokens}, {"samples", c.samples}, {"prompt", c.prompt}, {"checkpoint_every", c.checkpoint_every},
      {"keep", c.keep}, {"max_bad_steps", c.max_bad_steps}, {"peak_tflops", c.peak_tflops},
      {"metrics", c.metrics}, {"zero1", c.zero1}, {"bucket_mb", c.bucket_mb},
      {"collective_timeout", c.collective_timeout}};
  return json.dump();
}

int parse_train_command_line(int argc, char** argv, TrainConfig& config, bool& describe) {
  CLI::App app{"braid train: train a hybrid attention + Mamba-2 language model on token shards.\n"
               "  build/train --model FILE --data GLOB --val GLOB [options]\n"
               "  build/train --describe --model FILE [--seq-len L]"};
  std::string config_file;
  add_train_options(app, config, config_file);
  app.add_flag("--describe", describe, "print the per-layer parameter, FLOP and cache table and exit");
  try {
    app.parse(argc, argv);
    if (!config_file.empty()) {
      // Re-parse with the run config's options first, so the command line overrides them.
      std::vector<std::string> arguments = run_config_arguments(config_file, app);
      for (int i = 1; i < argc; ++i) arguments.emplace_back(argv[i]);
      config = TrainConfig{};
      describe = false;
      std::vector<std::string> reversed(arguments.rbegin(), arguments.rend());
      app.clear();
      app.parse(reversed);
    }
  } catch (const CLI::ParseError& error) {
    return app.exit(error);
  }
  return -1;
}

}  // namespace braid
