#include "layers/sampling.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "autograd/tape.h"
#include "runtime/random_transform.h"

namespace braid {

uint32_t sample_token(const std::vector<double>& logits, const SamplingConfig& config, uint64_t draw) {
  BRAID_CHECK(!logits.empty(), "sampling from empty logits");
  const size_t vocab = logits.size();
  if (config.temperature <= 0)
    return uint32_t(std::max_element(logits.begin(), logits.end()) - logits.begin());
  // Candidates by descending logit (ties: lower id first), cut by top-k.
  std::vector<uint32_t> order(vocab);
  std::iota(order.begin(), order.end(), 0u);
  std::stable_sort(order.begin(), order.end(), [&](uint32_t a, uint32_t b) { return logits[a] > logits[b]; });
  size_t keep = config.top_k > 0 ? std::min(vocab, size_t(config.top_k)) : vocab;
  std::vector<double> probability(keep);
  const double top = logits[order[0]];
  double total = 0;
  for (size_t i = 0; i < keep; ++i) total += probability[i] = std::exp((logits[order[i]] - top) / config.temperature);
  // Top-p: the smallest prefix whose mass reaches p.
  double mass = 0;
  for (size_t i = 0; i < keep; ++i) {
    mass += probability[i] / total;
    if (mass >= config.top_p) {
      keep = i + 1;
      break;
    }
  }
  double kept_total = 0;
  for (size_t i = 0; i < keep; ++i) kept_total += probability[i];
  double target = philox::uniform_at(config.seed, draw, 0.0, kept_total);
  for (size_t i = 0; i < keep; ++i) {
    target -= probability[i];
    if (target <= 0) return order[i];
  }
  return order[keep - 1];
}

std::vector<uint32_t> generate(const HybridLM& model, std::vector<uint32_t> prompt, int64_t count,
                               int64_t context, const SamplingConfig& config) {
  BRAID_CHECK(!prompt.empty(), "generate needs at least one prompt token");
  autograd::NoGradScope no_grad;
  const int64_t vocab = model.config().vocab_size;
  for (int64_t step = 0; step < count; ++step) {
    const size_t begin = prompt.size() > size_t(context) ? prompt.size() - size_t(context) : 0;
    std::vector<double> window(prompt.begin() + long(begin), prompt.end());
    Tensor ids = Tensor::from_values(window, {1, int64_t(window.size())}, DType::i32);
    Tensor logits = model.logits(autograd::leaf(ids.to(model.device())))->value;
    Tensor last = logits.select(1, logits.size(1) - 1).to(Device::cpu()).reshape({vocab});
    prompt.push_back(sample_token(last.to_doubles(), config, uint64_t(step)));
  }
  return prompt;
}

}  // namespace braid
