#include "train/data_parallel.h"

#include <cmath>
#include <map>

#include "autograd/tape.h"

namespace braid {

DataParallel::DataParallel(std::vector<Parameter> parameters, const Device& device, Communicator& communicator,
                           const DataParallelOptions& options)
    : parameters_(std::move(parameters)), device_(device), communicator_(communicator), options_(options) {
  BRAID_CHECK(options_.bucket_bytes > 0, "data parallel: bucket size must be positive, got ", options_.bucket_bytes);
  collectives_ = make_collectives(communicator_, device_);
  const int64_t world = communicator_.size();
  const int64_t bucket_elements = std::max<int64_t>(options_.bucket_bytes / int64_t(sizeof(float)), 1);
  placements_.resize(parameters_.size());
  // Reverse registration order: the last layers' gradients are final first.
  for (size_t i = parameters_.size(); i-- > 0;) {
    const Tensor& value = parameters_[i].variable->value;
    BRAID_CHECK(value.dtype() == DType::f32 && value.is_contiguous() && value.device() == device_,
                "data parallel: parameter ", parameters_[i].name, " is ", value.describe(), "; expected contiguous f32 on ",
                device_.to_string());
    if (buckets_.empty() || (buckets_.back().padded + value.numel() > bucket_elements && !buckets_.back().members.empty()))
      buckets_.emplace_back();
    Bucket& bucket = buckets_.back();
    placements_[i] = {buckets_.size() - 1, bucket.padded};
    bucket.members.push_back(i);
    bucket.padded += value.numel();
    index_of_[parameters_[i].variable.get()] = i;
  }
  for (Bucket& bucket : buckets_) {
    bucket.padded = (bucket.padded + world - 1) / world * world;
    bucket.block = bucket.padded / world;
    bucket.grads = Tensor::zeros({bucket.padded}, DType::f32, device_);
  }
  used_.assign(parameters_.size(), 0);
  reported_.assign(parameters_.size(), false);
  if (!options_.zero1) {
    optimizer_ = std::make_unique<AdamW>(parameters_, options_.adamw);
    return;
  }
  // ZeRO-1: this rank's block of each bucket, cut at parameter boundaries.
  std::vector<Parameter> shard_parameters;
  for (Bucket& bucket : buckets_) {
    bucket.block_weights = Tensor::zeros({bucket.block}, DType::f32, device_);
    bucket.block_grads = Tensor::zeros({bucket.block}, DType::f32, device_);
    const int64_t lo = communicator_.rank() * bucket.block, hi = lo + bucket.block;
    for (size_t index : bucket.members) {
      const int64_t offset = placements_[index].offset, numel = parameters_[index].variable->value.numel();
      const int64_t begin = std::max(lo, offset), end = std::min(hi, offset + numel);
      if (begin >= end) continue;
      const Parameter& parameter = parameters_[index];
      autograd::Var variable = autograd::leaf(bucket.block_weights.narrow(0, begin - lo, end - begin), true, parameter.name);
      shards_.push_back({index, begin - offset, end - begin, variable});
      shard_parameters.push_back({parameter.name, variable, parameter.init, parameter.weight_decay});
    }
  }
  optimizer_ = std::make_unique<AdamW>(shard_parameters, options_.adamw);
  load_weights_into_shards();
}

DataParallel::~DataParallel() { autograd::set_leaf_ready_hook(nullptr); }

void DataParallel::load_weights_into_shards() {
  for (const Shard& shard : shards_)
    collectives_->stage(shard.variable->value.data<float>(),
                        parameters_[shard.parameter].variable->value.data<float>() + shard.begin, shard.length);
}

void DataParallel::begin_reduction() {
  std::fill(used_.begin(), used_.end(), 0);
  std::fill(reported_.begin(), reported_.end(), false);
  for (Bucket& bucket : buckets_) bucket.ready = 0;
  next_launch_ = 0;
  autograd::set_leaf_ready_hook([this](autograd::Variable& variable) {
    auto found = index_of_.find(&variable);
    if (found != index_of_.end()) on_gradient_ready(found->second);
  });
}

void DataParallel::on_gradient_ready(size_t index) {
  if (reported_[index]) return;
  reported_[index] = true;
  autograd::Variable& variable = *parameters_[index].variable;
  const Placement& place = placements_[index];
  Bucket& bucket = buckets_[place.bucket];
  float* slot = bucket.grads.data<float>() + place.offset;
  if (variable.grad.defined()) {
    BRAID_CHECK(variable.grad.dtype() == DType::f32, "data parallel: the gradient of ", parameters_[index].name,
                " is ", variable.grad.describe(), ", expected f32");
    const Tensor grad = variable.grad.contiguous();
    collectives_->stage(slot, grad.data<float>(), grad.numel());
    used_[index] = 1;
  } else {
    collectives_->stage(slot, nullptr, variable.value.numel());
  }
  // Its memory is free for the rest of backward; finish_reduction() puts the summed one back.
  variable.grad = Tensor();
  if (++bucket.ready == bucket.members.size()) launch_ready_buckets();
}

void DataParallel::launch_ready_buckets() {
  for (; next_launch_ < buckets_.size(); ++next_launch_) {
    Bucket& bucket = buckets_[next_launch_];
    if (bucket.ready < bucket.members.size()) return;
    if (bucket.padded > 0) {
      // The padding past the last parameter stays zero: zeros() at construction, and the ZeRO-1
      // weight all-gather brings back the zero padding of block_weights.
      if (options_.zero1) collectives_->reduce_scatter_sum(bucket.grads.data<float>(), bucket.block_grads.data<float>(), bucket.block);
      else collectives_->all_reduce_sum(bucket.grads.data<float>(), bucket.padded);
    }
  }
}

void DataParallel::finish_reduction() {
  autograd::set_leaf_ready_hook(nullptr);
  // Parameters backward did not report (no gradient here, or reached only by recompute).
  for (size_t i = 0; i < parameters_.size(); ++i) {
    if (!reported_[i]) {
      on_gradient_ready(i);
    } else {
      BRAID_CHECK(!parameters_[i].variable->grad.defined(), "data parallel: the gradient of ", parameters_[i].name,
                  " changed after backward reported it final");
    }
  }
  launch_ready_buckets();
  std::vector<int32_t> used_anywhere = used_;
  communicator_.all_reduce_max(used_anywhere.data(), int64_t(used_anywhere.size()));
  collectives_->wait();
  if (!options_.zero1) {
    for (size_t i = 0; i < parameters_.size(); ++i) {
      autograd::Variable& variable = *parameters_[i].variable;
      const Placement& place = placements_[i];
      variable.grad = used_anywhere[i]
                          ? buckets_[place.bucket].grads.narrow(0, place.offset, variable.value.numel()).reshape(variable.value.shape())
                          : Tensor();
    }
    return;
  }
  for (Shard& shard : shards_) {
    const Placement& place = placements_[shard.parameter];
    const Bucket& bucket = buckets_[place.bucket];
    const int64_t in_block = place.offset + shard.begin - communicator_.rank() * bucket.block;
    shard.variable->grad = used_anywhere[shard.parameter] ? bucket.block_grads.narrow(0, in_block, shard.length) : Tensor();
  }
}

double DataParallel::grad_norm() {
  if (!options_.zero1) return optimizer_->grad_norm();  // every rank holds the same summed gradients
  double sum_of_squares = optimizer_->grad_sum_of_squares();
  communicator_.all_reduce_sum(&sum_of_squares, 1);
  return std::sqrt(sum_of_squares);
}

void DataParallel::clip(double norm, double max_norm) { optimizer_->clip(norm, max_norm); }

void DataParallel::step(double lr) {
  optimizer_->step(lr);
  if (!options_.zero1) return;
  // The full gradient buckets are spent (each rank's sum is in its block): they carry the weights.
  for (Bucket& bucket : buckets_) {
    if (bucket.padded == 0) continue;
    float* all = bucket.grads.data<float>();
    collectives_->stage(all + communicator_.rank() * bucket.block, bucket.block_weights.data<float>(), bucket.block);
    collectives_->all_gather(all, bucket.block);
  }
  collectives_->wait();
  for (size_t i = 0; i < parameters_.size(); ++i) {
    const Placement& place = placements_[i];
    Tensor& value = parameters_[i].variable->value;
    collectives_->stage(value.data<float>(), buckets_[place.bucket].grads.data<float>() + place.offset, value.numel());
  }
}

void DataParallel::zero_grad() {
  optimizer_->zero_grad();
  for (const Parameter& parameter : parameters_) parameter.variable->grad = Tensor();
}

std::vector<std::pair<std::string, Tensor>> DataParallel::optimizer_state() {
  if (!options_.zero1) return optimizer_->state();
  // Bucket by bucket, each rank's moments go to their place in a full-bucket buffer, which is
  // all-gathered and copied to the host: one bucket of device memory at a time.
  const std::vector<std::pair<std::string, Tensor>> local = optimizer_->state();  // m, v per shard
  std::vector<std::pair<std::string, Tensor>> state;
  for (size_t i = 0; i < parameters_.size(); ++i)
    for (const char* prefix : {"m.", "v."})
      state.emplace_back(prefix + parameters_[i].name, Tensor::empty(parameters_[i].variable->value.shape(), DType::f32));
  for (size_t b = 0; b < buckets_.size(); ++b) {
    const Bucket& bucket = buckets_[b];
    if (bucket.padded == 0) continue;
    for (size_t moment = 0; moment < 2; ++moment) {
      Tensor gathered = Tensor::zeros({bucket.padded}, DType::f32, device_);
      for (size_t s = 0; s < shards_.size(); ++s) {
        const Placement& place = placements_[shards_[s].parameter];
        if (place.bucket != b) continue;
        collectives_->stage(gathered.data<float>() + place.offset + shards_[s].begin,
                            local[2 * s + moment].second.data<float>(), shards_[s].length);
      }
      collectives_->all_gather(gathered.data<float>(), bucket.block);
      collectives_->wait();
      for (size_t index : bucket.members) {
        Tensor& target = state[2 * index + moment].second;
        target.copy_from(gathered.narrow(0, placements_[index].offset, target.numel()).reshape(target.shape()));
      }
    }
  }
  return state;
}

void DataParallel::load_optimizer_state(const std::vector<std::pair<std::string, Tensor>>& state, int64_t steps) {
  if (!options_.zero1) return optimizer_->load_state(state, steps);
  std::map<std::string, Tensor> by_name(state.begin(), state.end());
  std::vector<std::pair<std::string, Tensor>> local;
  for (const Shard& shard : shards_) {
    const Parameter& parameter = parameters_[shard.parameter];
    for (const char* prefix : {"m.", "v."}) {
      auto found = by_name.find(prefix + parameter.name);
      BRAID_CHECK(found != by_name.end(), "optimizer state has no ", prefix, parameter.name);
      BRAID_CHECK(found->second.numel() == parameter.variable->value.numel(), "optimizer state ", prefix,
                  parameter.name, " has shape ", shape_str(found->second.shape()), ", the parameter has ",
                  shape_str(parameter.variable->value.shape()));
      local.emplace_back(prefix + parameter.name,
                         found->second.contiguous().reshape({found->second.numel()}).narrow(0, shard.begin, shard.length));
    }
  }
  optimizer_->load_state(local, steps);
  load_weights_into_shards();
}

}  // namespace braid
