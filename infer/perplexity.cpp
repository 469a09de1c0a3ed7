#include "infer/perplexity.h"

#include <algorithm>
#include <cmath>
#include <sstream>

#include "autograd/tape.h"
#include "layers/ops/cross_entropy.h"
#include "layers/ops/layout.h"
#include "train/data_loader.h"

namespace braid::infer {

double PerplexityResult::perplexity() const { return std::exp(mean_nll()); }

std::vector<Window> split_windows(const std::vector<uint32_t>& tokens, int64_t context) {
  BRAID_CHECK(context > 0, "context must be positive, got ", context);
  std::vector<Window> windows;
  for (size_t start = 0; start + 1 < tokens.size(); start += size_t(context)) {
    const size_t end = std::min(tokens.size(), start + size_t(context) + 1);
    windows.emplace_back(tokens.begin() + long(start), tokens.begin() + long(end));
  }
  return windows;
}

std::vector<Window> shard_windows(const std::string& shards, int64_t context, int64_t vocab_size) {
  DataLoaderOptions options;
  std::stringstream list(shards);
  for (std::string entry; std::getline(list, entry, ',');)
    if (!entry.empty()) options.shards.push_back(entry);
  options.batch_size = 1;
  options.seq_len = context;
  options.vocab_size = vocab_size;
  options.shuffle = false;
  DataLoader loader(options);
  std::vector<Window> windows(loader.batches_per_epoch());
  for (Window& window : windows) {
    Batch row = loader.next();
    const uint32_t* inputs = row.inputs.data<uint32_t>();
    window.assign(inputs, inputs + context);
    window.push_back(row.targets.data<uint32_t>()[context - 1]);
  }
  return windows;
}

PerplexityResult evaluate_perplexity(const HybridLM& model, const std::vector<Window>& windows,
                                     const PerplexityOptions& options) {
  BRAID_CHECK(options.bucket > 0 && options.batch > 0, "bucket and batch must be positive, got ",
              options.bucket, " and ", options.batch);
  const uint32_t vocab = uint32_t(model.config().vocab_size);
  int64_t total = 0;
  for (const Window& window : windows) {
    for (uint32_t id : window)
      BRAID_CHECK(id < vocab, "token id ", id, " is outside the model's vocabulary of ", vocab);
    total += int64_t(window.size()) - 1;
  }
  if (options.max_tokens > 0) total = std::min(total, options.max_tokens);

  autograd::NoGradScope no_grad;
  PerplexityResult result;
  std::vector<double> bucket_sum;
  size_t next = 0;
  while (result.tokens < total && next < windows.size()) {
    // A pass: consecutive windows of one length (all but a text's last are full), cut to the budget
    // (the first window always fits: `length` is at most what is left of the budget).
    const int64_t length = std::min<int64_t>(int64_t(windows[next].size()) - 1, total - result.tokens);
    std::vector<double> inputs, targets;
    int64_t rows = 0;
    while (rows < options.batch && next < windows.size() && int64_t(windows[next].size()) - 1 >= length &&
           result.tokens + (rows + 1) * length <= total) {
      const Window& window = windows[next++];
      inputs.insert(inputs.end(), window.begin(), window.begin() + length);
      targets.insert(targets.end(), window.begin() + 1, window.begin() + length + 1);
      ++rows;
    }
    const int64_t positions = int64_t(inputs.size()) / rows;
    const Device device = model.device();
    autograd::Var hidden = model.hidden(autograd::leaf(Tensor::from_values(inputs, {rows, positions}, DType::i32).to(device)));
    autograd::Var target_ids = autograd::leaf(Tensor::from_values(targets, {rows, positions}, DType::i32).to(device));
    for (int64_t begin = 0; begin < positions; begin += options.bucket) {
      const int64_t end = std::min(positions, begin + options.bucket);
      const size_t index = size_t(begin / options.bucket);
      if (bucket_sum.size() <= index) {
        bucket_sum.resize(index + 1, 0.0);
        result.buckets.resize(index + 1);
      }
      // Mean over the bucket's rows x positions; times their number gives the bucket's NLL sum.
      const double mean = ops::lm_head_cross_entropy(ops::narrow(hidden, 1, begin, end - begin),
                                                     model.embedding().weight(),
                                                     ops::narrow(target_ids, 1, begin, end - begin))->value.item();
      const int64_t count = rows * (end - begin);
      bucket_sum[index] += mean * double(count);
      result.buckets[index].count += count;
      result.nll_sum += mean * double(count);
    }
    result.tokens += rows * positions;
    result.windows += rows;
    if (options.progress) options.progress(result.tokens, total);
  }
  for (size_t i = 0; i < result.buckets.size(); ++i) {
    PositionBucket& bucket = result.buckets[i];
    bucket.begin = int64_t(i) * options.bucket;
    bucket.end = bucket.begin + options.bucket;
    bucket.mean_nll = bucket_sum[i] / double(bucket.count);
  }
  return result;
}

}  // namespace braid::infer
