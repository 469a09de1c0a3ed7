#include "train/trainer.h"

#include <nlohmann/json.hpp>
#include <omp.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <map>
#include <sstream>

#include "autograd/tape.h"
#include "layers/cost_model.h"
#include "layers/block.h"
#include "layers/ffn.h"
#include "layers/ops/elementwise.h"
#include "layers/sampling.h"
#include "runtime/token_shard.h"
#ifdef BRAID_CUDA
#include "runtime/device_copy.h"
#endif
#include "train/checkpoint.h"

namespace braid {

namespace {

using Clock = std::chrono::steady_clock;

std::vector<std::string> split_list(const std::string& text) {
  std::vector<std::string> parts;
  std::stringstream stream(text);
  for (std::string part; std::getline(stream, part, ',');)
    if (!part.empty()) parts.push_back(part);
  return parts;
}

// Entropy (nats) of the token distribution of the shards: the loss of a model that ignores context.
double unigram_entropy(const std::vector<std::string>& shard_paths) {
  std::map<uint32_t, uint64_t> counts;
  uint64_t total = 0;
  for (const std::string& path : shard_paths) {
    TokenShard shard = TokenShard::open(path);
    for (size_t i = 0; i < shard.size(); ++i) ++counts[shard[i]];
    total += shard.size();
  }
  double entropy = 0;
  for (const auto& [id, count] : counts) {
    const double p = double(count) / double(total);
    entropy -= p * std::log(p);
  }
  return entropy;
}

std::string format_duration(double seconds) {
  const int64_t s = int64_t(seconds);
  char text[32];
  if (s >= 3600) std::snprintf(text, sizeof text, "%ldh%02ldm", long(s / 3600), long(s / 60 % 60));
  else std::snprintf(text, sizeof text, "%ldm%02lds", long(s / 60), long(s % 60));
  return text;
}

}  // namespace

Trainer::Trainer(TrainConfig config) : config_(std::move(config)), communicator_(Communicator::world()) {
  communicator_.set_timeout_seconds(config_.collective_timeout);
  const int64_t world = communicator_.size();
  // Under a launcher, plain "cuda" means this rank's device: the local rank.
  device_ = Device::parse(world > 1 && config_.device == "cuda" ? "cuda:" + std::to_string(communicator_.local_rank())
                                                                 : config_.device);
  if (device_.is_cuda())
    BRAID_CHECK(device_.index < cuda_device_count(), "--device ", config_.device, " (", device_.to_string(), "): ",
                cuda_device_count(), " CUDA device(s) usable here (none without a GPU or in a CPU-only build)");
#ifdef BRAID_CUDA
  // Every rank's kernels, handles and NCCL communicator on its own device.
  if (device_.is_cuda()) cuda_set_device(device_.index);
#endif
  if (config_.dtype.empty()) config_.dtype = device_.is_cuda() ? "bf16" : "fp32";
  BRAID_CHECK(config_.dtype == "fp32" || config_.dtype == "bf16", "--dtype ", config_.dtype,
              ": expected fp32 or bf16");
  BRAID_CHECK(config_.dtype == "fp32" || device_.is_cuda(), "--dtype ", config_.dtype,
              ": the CPU backend trains in fp32; bf16 needs --device cuda");
  BRAID_CHECK(!config_.data.empty(), "--data is required (training token shards)");
  BRAID_CHECK(config_.seq_len > 0 && config_.micro_batch > 0, "--seq-len and --micro-batch must be positive, got ",
              config_.seq_len, " and ", config_.micro_batch);
  if (config_.threads > 0) omp_set_num_threads(config_.threads);
  if (is_root()) check_writable(config_.out);

  // The model: from the checkpoint's own config when resuming, so the weights always fit.
  std::optional<std::string> checkpoint;
  if (!config_.resume.empty()) {
    checkpoint = std::filesystem::exists(config_.resume + "/state.json")
                     ? std::optional<std::string>(config_.resume) : find_latest_checkpoint(config_.resume);
    BRAID_CHECK(checkpoint.has_value(), "--resume ", config_.resume, ": no complete checkpoint there");
    const auto saved = nlohmann::json::parse(load_checkpoint(*checkpoint).config_json);
    model_config_ = parse_model_config(saved.at("model").dump(), *checkpoint + "/config.json");
  } else {
    BRAID_CHECK(!config_.model.empty(), "--model is required (a model config JSON)");
    model_config_ = load_model_config(config_.model);
  }
  // fp32 parameters everywhere: with --dtype bf16 they are the master weights (DESIGN.md).
  model_ = std::make_unique<HybridLM>(model_config_, TensorOptions{device_, DType::f32});
  model_->set_activation_dtype(config_.dtype == "bf16" ? DType::bf16 : DType::f32);
  model_->set_recompute(config_.recompute);
  Generator generator(config_.seed);
  model_->initialize(generator);
  const AdamWConfig adamw{config_.beta1, config_.beta2, config_.adam_eps, config_.weight_decay};
  if (world > 1 || config_.zero1) {
    BRAID_CHECK(config_.bucket_mb > 0, "--bucket-mb must be positive, got ", config_.bucket_mb);
    parallel_ = std::make_unique<DataParallel>(
        model_->named_parameters(), device_, communicator_,
        DataParallelOptions{config_.zero1, int64_t(config_.bucket_mb * double(1 << 20)), adamw});
  } else {
    optimizer_ = std::make_unique<AdamW>(model_->named_parameters(), adamw);
  }

  DataLoaderOptions train_options;
  train_options.shards = split_list(config_.data);
  train_options.batch_size = config_.micro_batch;
  train_options.seq_len = config_.seq_len;
  train_options.vocab_size = model_config_.vocab_size;
  train_options.seed = config_.seed;
  train_options.rank = communicator_.rank();
  train_options.world_size = world;
  train_data_ = std::make_unique<DataLoader>(train_options);
  if (!config_.val.empty()) {
    DataLoaderOptions val_options = train_options;
    val_options.shards = split_list(config_.val);
    val_options.rank = 0;  // rank 0 alone validates
    val_options.world_size = 1;
    val_options.shuffle = false;
    val_data_ = std::make_unique<DataLoader>(val_options);
    BRAID_CHECK(val_data_->batches_per_epoch() > 0, "--val ", config_.val, ": fewer than ", config_.micro_batch,
                " rows of ", config_.seq_len + 1, " tokens");
  }
  if (!config_.tokenizer.empty()) tokenizer_ = Tokenizer::open(config_.tokenizer);

  // Batch and budget. --batch-tokens is the global batch: the same run on any number of ranks.
  const int64_t micro_tokens = config_.micro_batch * config_.seq_len;
  if (config_.batch_tokens > 0) {
    BRAID_CHECK(config_.batch_tokens % (micro_tokens * world) == 0, "--batch-tokens ", config_.batch_tokens,
                " is not a multiple of micro-batch x seq-len x ranks = ", micro_tokens, " x ", world);
    accumulation_ = config_.batch_tokens / (micro_tokens * world);
  }
  const int64_t step_tokens = accumulation_ * micro_tokens * world;
  flops_per_token_ = model_cost(model_config_, config_.seq_len).flops_per_token;
  if (config_.steps > 0) total_steps_ = config_.steps;
  else if (config_.tokens > 0) total_steps_ = (config_.tokens + step_tokens - 1) / step_tokens;
  else if (config_.flops > 0) total_steps_ = int64_t(std::ceil(config_.flops / flops_per_token_ / double(step_tokens)));
  BRAID_CHECK(total_steps_ > 0, "no budget: give --steps, --tokens or --flops");

  schedule_.kind = parse_schedule_kind(config_.schedule);
  schedule_.peak_lr = config_.lr;
  schedule_.min_lr_ratio = config_.min_lr_ratio;
  schedule_.warmup_fraction = config_.warmup;
  schedule_.cooldown_fraction = config_.cooldown;

  if (checkpoint) resume_from(*checkpoint);
  if (!is_root()) return;
  const std::string metrics_path = config_.metrics.empty() ? config_.out + "/metrics.jsonl" : config_.metrics;
  metrics_.open(metrics_path, checkpoint ? std::ios::app : std::ios::trunc);
  BRAID_CHECK(metrics_.good(), metrics_path, ": cannot write the metrics file");
}

double Trainer::grad_norm() { return parallel_ ? parallel_->grad_norm() : optimizer_->grad_norm(); }

void Trainer::zero_grad() {
  if (parallel_) parallel_->zero_grad();
  else optimizer_->zero_grad();
}

int64_t Trainer::optimizer_steps() const { return parallel_ ? parallel_->steps() : optimizer_->steps(); }

void Trainer::resume_from(const std::string& path) {
  CheckpointContents contents = load_checkpoint(path);
  std::map<std::string, Tensor> tensors(contents.model.begin(), contents.model.end());
  for (const Parameter& parameter : model_->named_parameters()) {
    auto found = tensors.find(parameter.name);
    BRAID_CHECK(found != tensors.end(), path, ": model.safetensors has no ", parameter.name);
    BRAID_CHECK(found->second.shape() == parameter.variable->value.shape(), path, ": ", parameter.name,
                " has shape ", shape_str(found->second.shape()), ", the model needs ",
                shape_str(parameter.variable->value.shape()));
    parameter.variable->value.copy_from(found->second);
  }
  for (size_t i = 0; i < model_->blocks().size(); ++i) {
    if (MoE* moe = model_->blocks()[i]->moe()) {
      const std::string name = "layers." + std::to_string(i) + ".ffn.routing_bias";
      BRAID_CHECK(tensors.count(name), path, ": model.safetensors has no ", name);
      Tensor bias = moe->routing_bias();  // a handle: copying into it fills the model's buffer
      bias.copy_from(tensors.at(name));
    }
  }
  const auto state = nlohmann::json::parse(contents.state_json);
  const int64_t optimizer_steps = state.at("optimizer_steps").get<int64_t>();
  if (parallel_) parallel_->load_optimizer_state(contents.optimizer, optimizer_steps);  // after the weights
  else optimizer_->load_state(contents.optimizer, optimizer_steps);
  start_step_ = state.at("step").get<int64_t>();
  tokens_seen_ = state.at("tokens_seen").get<int64_t>();
  train_data_->seek({state.at("data").at("epoch").get<uint64_t>(), state.at("data").at("index").get<uint64_t>()});
  BRAID_CHECK(state.at("seed").get<uint64_t>() == config_.seed, path, ": the run used --seed ",
              state.at("seed").get<uint64_t>(), ", this one ", config_.seed);
  if (is_root())
    std::printf("resumed from %s at step %ld (%ld tokens seen, saved by %ld rank(s), now %d)\n", path.c_str(),
                long(start_step_), long(tokens_seen_), long(state.value("world_size", int64_t(1))),
                communicator_.size());
}

Trainer::StepResult Trainer::train_step(int64_t step, double lr) {
  zero_grad();
  const int64_t micro_batches = accumulation_ * communicator_.size();  // of all ranks together
  double loss_sum = 0;
  for (int64_t micro = 0; micro < accumulation_; ++micro) {
    Batch batch = train_data_->next();
    autograd::Var loss = model_->loss(autograd::leaf(batch.inputs.to(device_)),
                                      autograd::leaf(batch.targets.to(device_)));
    loss_sum += loss->value.item();
    // Each micro-batch contributes its mean / micro-batches, so the gradient is the step's mean.
    // Ranks communicate only during the step's last backward.
    const bool last = micro + 1 == accumulation_;
    if (parallel_ && last) parallel_->begin_reduction();
    autograd::backward(micro_batches > 1 ? ops::scale(loss, 1.0 / double(micro_batches)) : loss);
    autograd::clear_tape();  // anything the loss did not depend on is dropped with the step
    if (parallel_ && last) parallel_->finish_reduction();
  }
  communicator_.all_reduce_sum(&loss_sum, 1);  // a non-finite loss on any rank stays non-finite
  const double loss = loss_sum / double(micro_batches);
  const bool finite = std::isfinite(loss);
  const double norm = grad_norm();
  tokens_seen_ += micro_batches * config_.micro_batch * config_.seq_len;
  if (!finite || !std::isfinite(norm)) {
    zero_grad();
    std::fprintf(stderr, "step %ld refused: %s is %s; the weights are unchanged\n", long(step + 1),
                 finite ? "the gradient norm" : "the loss", finite ? std::to_string(norm).c_str() : "not finite");
    return {NAN, norm};
  }
  if (parallel_) {
    parallel_->clip(norm, config_.clip);
    parallel_->step(lr);
    // Every rank moves its routing biases by the loads of all ranks, so they stay identical.
    for (Block* block : model_->blocks())
      if (MoE* moe = block->moe()) {
        Tensor load = moe->load_since_update();  // a handle: reducing into it updates the model's count
        communicator_.all_reduce_sum(load.data<int64_t>(), load.numel());
      }
  } else {
    optimizer_->clip(norm, config_.clip);
    optimizer_->step(lr);
  }
  model_->update_routing_biases();
  return {loss, norm};
}

double Trainer::evaluate() {
  if (!val_data_ || !is_root()) return NAN;
  autograd::NoGradScope no_grad;
  val_data_->seek({0, 0});
  const int64_t batches = std::min<int64_t>(config_.eval_batches, int64_t(val_data_->batches_per_epoch()));
  double total = 0;
  for (int64_t b = 0; b < batches; ++b) {
    Batch batch = val_data_->next();
    total += model_->loss(autograd::leaf(batch.inputs.to(device_)), autograd::leaf(batch.targets.to(device_)))
                 ->value.item();
  }
  return total / double(batches);
}

void Trainer::print_sample(int64_t step) {
  if (!tokenizer_ || !is_root()) return;
  std::vector<uint32_t> prompt = {tokenizer_->bos_id()};
  for (uint32_t id : tokenizer_->encode(config_.prompt)) prompt.push_back(id);
  for (int64_t i = 0; i < config_.samples; ++i) {
    SamplingConfig sampling{0.8, 40, 0.95, config_.seed + uint64_t(step) * 1000 + uint64_t(i)};
    std::vector<uint32_t> tokens = generate(*model_, prompt, config_.sample_tokens, config_.seq_len, sampling);
    // Document boundaries (BOS/EOS) read better as line breaks than as their marker strings.
    std::string text;
    std::vector<uint32_t> piece;
    for (size_t t = 1; t <= tokens.size(); ++t) {
      const bool boundary = t == tokens.size() || tokens[t] == tokenizer_->bos_id() || tokens[t] == tokenizer_->eos_id();
      if (!boundary) {
        piece.push_back(tokens[t]);
      } else if (!piece.empty()) {
        text += (text.empty() ? "" : "\n  ") + tokenizer_->decode(piece);
        piece.clear();
      }
    }
    std::printf("--- sample %ld at step %ld ---\n  %s\n", long(i + 1), long(step), text.c_str());
  }
  std::fflush(stdout);
}

std::string Trainer::save(int64_t step) {
  CheckpointContents contents;
  for (const Parameter& parameter : model_->named_parameters())
    contents.model.emplace_back(parameter.name, parameter.variable->value);
  for (size_t i = 0; i < model_->blocks().size(); ++i)
    if (const MoE* moe = model_->blocks()[i]->moe())
      contents.model.emplace_back("layers." + std::to_string(i) + ".ffn.routing_bias", moe->routing_bias());
  contents.optimizer = parallel_ ? parallel_->optimizer_state() : optimizer_->state();  // collective
  contents.config_json = "{\"model\": " + model_config_to_json(model_config_) +
                         ", \"train\": " + train_config_to_json(config_) + "}";
  const DataLoader::Position position = train_data_->state();
  contents.state_json = nlohmann::json{{"step", step},
                                       {"tokens_seen", tokens_seen_},
                                       {"optimizer_steps", optimizer_steps()},
                                       {"data", {{"epoch", position.epoch}, {"index", position.index}}},
                                       {"seed", config_.seed},
                                       {"world_size", communicator_.size()}}
                            .dump();
  if (!is_root()) return "";
  const std::string dir = save_checkpoint(config_.out, step, contents);
  keep_last(config_.out, int(config_.keep));
  return dir;
}

void Trainer::log_step(int64_t step, double loss, double lr, double grad_norm, double seconds) {
  if (!is_root()) return;
  const double step_tokens = double(accumulation_ * communicator_.size() * config_.micro_batch * config_.seq_len);
  const double tokens_per_second = step_tokens / seconds;
  // Per device: the peak is one card's.
  const double mfu = config_.peak_tflops > 0
                         ? tokens_per_second / communicator_.size() * flops_per_token_ / (config_.peak_tflops * 1e12)
                         : NAN;
  const double eta = seconds * double(total_steps_ - step);
  // Peak memory of the steps since the last line, on the training device.
  Allocator& allocator = allocator_for(device_);
  const AllocatorStats memory = allocator.stats();
  allocator.reset_peaks();
  std::string mfu_text = std::isnan(mfu) ? "-" : str(std::round(mfu * 1000) / 10, "%");
  std::printf("step %5ld/%ld | loss %.4f | lr %.2e | grad norm %.3f | %.0f tok/s | MFU %s | peak %s | ETA %s\n",
              long(step), long(total_steps_), loss, lr, grad_norm, tokens_per_second, mfu_text.c_str(),
              format_bytes(memory.peak_allocated).c_str(), format_duration(eta).c_str());
  std::fflush(stdout);
  nlohmann::json line = {{"step", step}, {"loss", loss}, {"lr", lr}, {"grad_norm", grad_norm},
                         {"tokens", tokens_seen_}, {"tokens_per_s", tokens_per_second},
                         {"step_seconds", seconds}, {"peak_bytes", memory.peak_allocated}};
  if (!std::isnan(mfu)) line["mfu"] = mfu;
  metrics_ << line.dump() << '\n' << std::flush;
}

TrainResult Trainer::run() {
  if (is_root()) {
    result_.unigram_entropy = unigram_entropy(train_data_->shard_paths());
    std::printf("model %s: %ld parameters, pattern %s | %ld steps of %ld tokens (%ld micro-batches x %d rank(s)%s) | "
                "unigram entropy of the training tokens %.4f nats\n",
                model_config_.name.c_str(), long(model_->parameter_count()), model_config_.pattern.c_str(),
                long(total_steps_), long(accumulation_ * communicator_.size() * config_.micro_batch * config_.seq_len),
                long(accumulation_), communicator_.size(), config_.zero1 ? ", ZeRO-1" : "", result_.unigram_entropy);
  }
  int64_t bad_steps = 0;
  for (int64_t step = start_step_; step < total_steps_; ++step) {
    const double lr = learning_rate(schedule_, step, total_steps_);
    const auto begin = Clock::now();
    const auto [loss, grad_norm] = train_step(step, lr);
    const double seconds = std::chrono::duration<double>(Clock::now() - begin).count();
    if (std::isnan(loss)) {
      if (++bad_steps >= config_.max_bad_steps) {
        const auto latest = find_latest_checkpoint(config_.out);
        BRAID_FAIL("stopping after ", bad_steps, " consecutive steps with a non-finite loss or gradient; ",
                   latest ? "the last good checkpoint is " + *latest : std::string("no checkpoint was written"));
      }
      continue;
    }
    bad_steps = 0;
    result_.final_train_loss = loss;
    const int64_t done = step + 1;
    if (done % std::max<int64_t>(config_.log_every, 1) == 0 || done == total_steps_)
      log_step(done, loss, lr, grad_norm, seconds);
    if (config_.eval_every > 0 && done % config_.eval_every == 0 && done != total_steps_) {
      const double val = evaluate();
      if (!std::isnan(val)) {  // rank 0 only
        std::printf("step %5ld | validation loss %.4f\n", long(done), val);
        metrics_ << nlohmann::json{{"step", done}, {"val_loss", val}}.dump() << '\n' << std::flush;
      }
    }
    if (config_.sample_every > 0 && done % config_.sample_every == 0 && done != total_steps_) print_sample(done);
    if (config_.checkpoint_every > 0 && done % config_.checkpoint_every == 0 && done != total_steps_)
      result_.last_checkpoint = save(done);
  }
  result_.steps = total_steps_;
  result_.final_val_loss = evaluate();
  if (!std::isnan(result_.final_val_loss)) {
    std::printf("final validation loss %.4f nats (unigram entropy of the training tokens %.4f nats)\n",
                result_.final_val_loss, result_.unigram_entropy);
    metrics_ << nlohmann::json{{"step", total_steps_}, {"val_loss", result_.final_val_loss}}.dump() << '\n';
  }
  print_sample(total_steps_);
  result_.last_checkpoint = save(total_steps_);
  if (is_root()) std::printf("checkpoint %s\n", result_.last_checkpoint.c_str());
  return result_;
}

}  // namespace braid
