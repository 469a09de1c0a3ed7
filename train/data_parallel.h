// Data parallelism (DESIGN.md "Distributed"): every rank holds the whole model, trains on its own
// micro-batches, and the gradients are summed over ranks before AdamW.
//
// Gradients travel in buckets of about `bucket_bytes`, formed from the parameters in reverse
// registration order (the order backward finishes them). During the backward of a step's last
// micro-batch (earlier micro-batches only accumulate, with no communication), autograd reports
// each parameter whose gradient is final (autograd::set_leaf_ready_hook); its gradient is copied
// into its bucket, and a full bucket is reduced at once on the communication stream while backward
// goes on. Buckets launch strictly in bucket order so every rank issues the same collectives in the
// same order, even when a parameter (an MoE expert no local token chose) gets no gradient here.
// A parameter that got no gradient on any rank keeps none (AdamW skips it, as on one rank).
//
// Plain mode: buckets are all-reduced; every rank runs AdamW on the whole model.
// ZeRO-1: buckets are reduce-scattered; rank r owns block r of each bucket (padded to a multiple of
// the world size), keeps AdamW moments for it only, updates those weights, and the updated weights
// are all-gathered back into every rank's model. Both give the same weights. Memory per rank: the
// gradient buckets (1x the parameters) plus, in ZeRO-1, its blocks of weights, gradients and the two
// moments (4/W x) instead of the two moments (2x).
//
// The loss of each micro-batch is scaled by 1 / (micro-batches per rank x ranks) by the caller, so
// the summed gradient is the mean over all micro-batches of all ranks.
#pragma once

#include <memory>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "layers/module.h"
#include "runtime/communicator.h"
#include "train/optimizer.h"

namespace braid {

struct DataParallelOptions {
  bool zero1 = false;
  int64_t bucket_bytes = int64_t(25) << 20;
  AdamWConfig adamw;
};

class DataParallel {
 public:
  // The parameters of one model (f32, all on `device`), identical on every rank.
  DataParallel(std::vector<Parameter> parameters, const Device& device, Communicator& communicator,
               const DataParallelOptions& options);
  ~DataParallel();
  DataParallel(const DataParallel&) = delete;
  DataParallel& operator=(const DataParallel&) = delete;

  // Around the backward of the step's last micro-batch: begin installs the autograd hook that
  // launches each bucket as it fills; finish launches the rest, waits, and leaves the summed
  // gradients in the parameters (plain) or this rank's block of them (ZeRO-1).
  void begin_reduction();
  void finish_reduction();

  // The AdamW interface, over all ranks: the global gradient norm, clipping, the update (ZeRO-1:
  // of this rank's blocks, then the all-gather of the weights), the moments of every parameter
  // (gathered: every rank must call it) and their restoration after the model's weights are loaded.
  double grad_norm();
  void clip(double norm, double max_norm);
  void step(double lr);
  void zero_grad();
  int64_t steps() const { return optimizer_->steps(); }
  std::vector<std::pair<std::string, Tensor>> optimizer_state();
  void load_optimizer_state(const std::vector<std::pair<std::string, Tensor>>& state, int64_t steps);

  size_t bucket_count() const { return buckets_.size(); }

 private:
  struct Bucket {
    std::vector<size_t> members;  // indices into parameters_
    int64_t padded = 0;           // elements, a multiple of the world size
    int64_t block = 0;            // padded / world size: one rank's block (ZeRO-1)
    Tensor grads;  // (padded) the bucket's gradients, summed in place (plain); ZeRO-1: after the
                   // reduce-scatter, the buffer the updated weights are all-gathered in
    Tensor block_weights, block_grads;  // ZeRO-1: this rank's block of weights and summed gradients
    size_t ready = 0;  // members whose gradient is staged this step
  };
  struct Placement {
    size_t bucket;
    int64_t offset;  // of the parameter's first element in the bucket
  };
  // A piece of one parameter inside this rank's block of a bucket (ZeRO-1).
  struct Shard {
    size_t parameter;
    int64_t begin, length;  // elements of the parameter
    autograd::Var variable; // value: a view of the bucket's block_weights; grad: of its block_grads
  };

  void on_gradient_ready(size_t index);
  void launch_ready_buckets();
  void load_weights_into_shards();  // from the model's weights

  std::vector<Parameter> parameters_;
  Device device_;
  Communicator& communicator_;
  DataParallelOptions options_;
  std::unique_ptr<Collectives> collectives_;
  std::vector<Bucket> buckets_;
  std::vector<Placement> placements_;
  std::unordered_map<const autograd::Variable*, size_t> index_of_;
  std::vector<int32_t> used_;       // this step: the parameter had a gradient on this rank
  std::vector<bool> reported_;
  size_t next_launch_ = 0;          // buckets launched so far this step, in order
  std::vector<Shard> shards_;
  std::unique_ptr<AdamW> optimizer_;  // plain: over the parameters; ZeRO-1: over the shards
};

}  // namespace braid
