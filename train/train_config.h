// Every option of the train binary, in one table used for the command line (CLI11), for JSON run
// configs (`--config run.json`: keys are the option names without dashes) and for --help.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace CLI {
class App;
}

namespace braid {

struct TrainConfig {
  // What to train on.
  std::string model;       // model config JSON
  std::string data;        // training shards: glob(s), comma-separated
  std::string val;         // validation shards
  std::string tokenizer;   // directory with encoder.json + vocab.bpe, or a tokenizer file (samples)
  std::string out = "runs/train";
  std::string resume;      // a checkpoint directory, or a run directory (its latest checkpoint)
  std::string device = "cpu";
  std::string dtype;  // empty: bf16 on CUDA, fp32 on the CPU
  // Shapes and budget (exactly one of steps / tokens / flops; steps wins when several are given).
  int64_t seq_len = 256;
  int64_t micro_batch = 8;
  int64_t batch_tokens = 0;  // tokens per optimizer step; 0 = one micro-batch
  int64_t steps = 0;
  int64_t tokens = 0;
  double flops = 0;
  // Optimization (MODEL.md section 8).
  double lr = 6e-3;
  double min_lr_ratio = 0.0;
  std::string schedule = "wsd";
  double warmup = 0.25;
  double cooldown = 0.2;
  double weight_decay = 0.1;
  double beta1 = 0.9, beta2 = 0.95, adam_eps = 1e-8;
  double clip = 1.0;
  bool recompute = false;
  uint64_t seed = 1234;
  bool deterministic = false;
  int threads = 0;  // 0 = OpenMP's default
  // Reporting.
  int64_t log_every = 1;
  int64_t eval_every = 100;
  int64_t eval_batches = 8;
  int64_t sample_every = 0;
  int64_t sample_tokens = 48;
  int64_t samples = 1;  // samples printed each time
  std::string prompt;
  int64_t checkpoint_every = 0;
  int64_t keep = 3;
  int64_t max_bad_steps = 3;
  double peak_tflops = 0;  // the card's dense peak for MFU; 0 = unknown (no MFU printed)
  std::string metrics;     // JSONL path; default <out>/metrics.jsonl
  // Data parallelism (under mpirun/srun; train/data_parallel.h).
  bool zero1 = false;               // shard AdamW state over the ranks
  double bucket_mb = 25;            // gradient all-reduce bucket size, MiB
  double collective_timeout = 600;  // seconds a rank waits for its peers before aborting the job
};

// Registers every TrainConfig field on `app` as --name (and --config FILE for JSON run configs).
void add_train_options(CLI::App& app, TrainConfig& config, std::string& config_file);
// Turns a JSON run config into command-line arguments (placed before the real ones, which win).
// Unknown keys raise braid::Error naming the closest option.
std::vector<std::string> run_config_arguments(const std::string& path, const CLI::App& app);
// The effective configuration as one JSON object (saved in checkpoints and printed at start).
std::string train_config_to_json(const TrainConfig& config);
// Parses argv (with --config support) into `config`. Returns -1 to continue, else an exit code
// (after --help, or a usage error already printed).
int parse_train_command_line(int argc, char** argv, TrainConfig& config, bool& describe);

}  // namespace braid
