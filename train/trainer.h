// The training loop of the train binary: data, model, AdamW, schedule, gradient accumulation,
// budgets, validation, samples, checkpoints, resume and metrics (DESIGN.md; MODEL.md section 8).
#pragma once

#include <cstdint>
#include <fstream>
#include <memory>
#include <optional>

#include "layers/hybrid_lm.h"
#include "runtime/communicator.h"
#include "tools/tokenizer.h"
#include "train/data_parallel.h"
#include "train/data_loader.h"
#include "train/optimizer.h"
#include "train/schedule.h"
#include "train/train_config.h"

namespace braid {

struct TrainResult {
  int64_t steps = 0;             // optimizer steps taken in total (including before a resume)
  double final_train_loss = 0;   // mean loss of the last step
  double final_val_loss = 0;     // NaN without a validation set
  double unigram_entropy = 0;    // of the training tokens, nats (the no-context baseline)
  std::string last_checkpoint;
};

class Trainer {
 public:
  explicit Trainer(TrainConfig config);
  TrainResult run();

 private:
  void resume_from(const std::string& path);
  struct StepResult {
    double loss;       // mean over the step's micro-batches; NaN when the step was refused
    double grad_norm;  // before clipping
  };
  StepResult train_step(int64_t step, double lr);
  double evaluate();
  void print_sample(int64_t step);
  std::string save(int64_t step);
  void log_step(int64_t step, double loss, double lr, double grad_norm, double seconds);
  // The optimizer interface, single-process (optimizer_) or data parallel (parallel_).
  double grad_norm();
  void zero_grad();
  int64_t optimizer_steps() const;

  // Rank 0 logs, validates, samples and writes checkpoints.
  bool is_root() const { return communicator_.rank() == 0; }

  TrainConfig config_;
  ModelConfig model_config_;
  Device device_;
  std::unique_ptr<HybridLM> model_;
  Communicator& communicator_;
  std::unique_ptr<AdamW> optimizer_;           // one process
  std::unique_ptr<DataParallel> parallel_;     // several ranks, or --zero1
  std::unique_ptr<DataLoader> train_data_, val_data_;
  std::optional<Tokenizer> tokenizer_;
  ScheduleConfig schedule_;
  int64_t accumulation_ = 1;  // micro-batches per rank per step
  int64_t total_steps_ = 0;
  int64_t start_step_ = 0;
  int64_t tokens_seen_ = 0;
  double flops_per_token_ = 0;
  std::ofstream metrics_;
  TrainResult result_;
};

}  // namespace braid
