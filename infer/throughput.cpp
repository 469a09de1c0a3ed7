#include "infer/throughput.h"

#include <chrono>

#include "infer/session.h"
#include "runtime/random_transform.h"

namespace braid::infer {

namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

}  // namespace

std::vector<ThroughputResult> measure_throughput(const HybridLM& model, const ThroughputOptions& options,
                                                 const std::function<void(const std::string&)>& progress) {
  BRAID_CHECK(options.batch > 0 && options.prompt > 0, "batch and prompt must be positive, got ", options.batch,
              " and ", options.prompt);
  const int64_t vocab = model.config().vocab_size;
  std::vector<std::vector<uint32_t>> prompts(size_t(options.batch));
  for (size_t b = 0; b < prompts.size(); ++b)
    for (int64_t t = 0; t < options.prompt; ++t)
      prompts[b].push_back(uint32_t(philox::uniform_at(options.seed, b * uint64_t(options.prompt) + uint64_t(t), 0.0,
                                                       double(vocab))) % uint32_t(vocab));
  Allocator& allocator = allocator_for(model.device());
  SamplingConfig greedy;
  greedy.temperature = 0;
  std::vector<ThroughputResult> results;
  for (int64_t total : options.totals) {
    BRAID_CHECK(total > options.prompt, "total length ", total, " must exceed the prompt's ", options.prompt);
    allocator.reset_peaks();
    ThroughputResult result;
    result.total = total;
    {
      Session session(model, SessionOptions{options.batch, total, options.prefill_chunk, options.cuda_graph});
      result.cache_bytes = session.cache_bytes();
      // Warm-up (kernel selection, graph capture), then the timed prefill: reading the logits back
      // waits for the device.
      session.generate(prompts, 2, greedy);
      Clock::time_point start = Clock::now();
      session.prefill(prompts).to(Device::cpu());
      result.prefill_seconds = seconds_since(start);
      // generate = prefill + the decode steps; its tokens come back to the host when it is done.
      result.decode_steps = total - options.prompt;
      start = Clock::now();
      session.generate(prompts, result.decode_steps, greedy);
      result.decode_seconds = std::max(1e-9, seconds_since(start) - result.prefill_seconds);
    }
    result.peak_bytes = int64_t(allocator.stats().peak_allocated);
    result.prefill_tokens_per_second = double(options.batch * options.prompt) / result.prefill_seconds;
    result.decode_tokens_per_second = double(options.batch * result.decode_steps) / result.decode_seconds;
    result.ms_per_step = 1e3 * result.decode_seconds / double(result.decode_steps);
    results.push_back(result);
    if (progress)
      progress("total " + std::to_string(total) + ": decode " + std::to_string(result.decode_tokens_per_second) +
               " tokens/s");
  }
  return results;
}

}  // namespace braid::infer
