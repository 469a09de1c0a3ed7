// The inference session (infer/session.h). Choices:
// - Caches are allocated once for batch x max_length by each mixer (layers/inference_cache.h for
//   the layouts: K/V as (batch, kv_heads, slots, head_dim) so a decode step streams each sequence's
//   keys contiguously per head).
// - Prompts of different lengths: each sequence is prefilled alone (a B = 1 forward per chunk) into
//   its row of the batched caches, so padding never exists; decode then runs the whole batch with a
//   position per sequence. A sequence's logits are those of that sequence run alone.
// - bf16 serving: with bf16 activations over fp32 master weights, every matrix is converted to bf16
//   once here (a WeightMap), so a decode step reads each weight once in bf16 and casts nothing.
// - Sampling: every sequence draws from the Philox stream (seed, draw = step), as braid::generate
//   does, so a sequence samples the same tokens in any batch. On CUDA the sampler runs on the
//   device (layers/ops/sampling.h) and only the chosen ids come back each step.
// - Decode steps keep their positions, slots and lengths on the device (ops::decode_step_indices
//   advances them), so a step uploads at most its tokens; the host keeps a mirror of the lengths
//   for its checks.
// - CUDA graph: the first decode step is recorded once (runtime/cuda_stream.h's CapturedGraph, its
//   tensors in a private allocator pool) reading fixed ids and index buffers and the caches at
//   their fixed addresses; every step then copies its ids in, replays, and copies the logits out.
//   Replays compute exactly what the eager step computes (same kernels, same order). Every family
//   is captured, MoE included (its decode step weights every expert by dense gates instead of
//   routing through host-side offsets, layers/ffn.cpp); a step that still cannot be captured (an op
//   that reads device values on the host) is found when the capture fails and runs eagerly.
#include "infer/session.h"

#include <algorithm>

#include "autograd/tape.h"
#include "layers/inference_cache.h"
#include "layers/ops/layout.h"
#include "layers/ops/decode.h"
#include "layers/ops/matmul.h"
#include "layers/ops/sampling.h"

#ifdef BRAID_CUDA
#include "runtime/cuda_stream.h"
#endif

namespace braid::infer {

struct Session::State {
  std::vector<LayerCache> caches;  // one per block
  WeightMap weights;
  bool converted = false;          // weights holds bf16 copies
  std::vector<int64_t> lengths;    // tokens held per sequence (0 before prefill), mirrored on the host
  int64_t window = 0, sink = 0, window_capacity = 0;  // the W layers' cache (when the model has one)
  int64_t bytes = 0;
  // The decode step's indices (5, batch) i32 on the model's device (ops::decode_step_indices):
  // positions, full lengths, window slots, window lengths, and the tokens each sequence holds. They
  // advance on the device, so a step uploads nothing but (from the host API) its tokens.
  Tensor indices;
#ifdef BRAID_CUDA
  // The captured decode step (SessionOptions::cuda_graph) reads its ids from graph_ids and leaves
  // its logits in graph_logits (both fixed addresses). A step whose capture failed (an op read
  // device values on the host) runs eagerly from then on: graph_failed.
  CapturedGraph graph;
  Tensor graph_ids, graph_logits;
  bool graph_failed = false;
#endif

  // One decode step of the whole batch from `ids` (batch, 1) i32 on the device; the caller checked
  // the lengths and ids. Returns the next-token logits (batch, vocab) fp32, the caller's to keep.
  Tensor decode_step(const HybridLM& model, const Tensor& ids, bool use_graph);
  // The step's work alone (no host bookkeeping): what eager steps run and the graph records.
  Tensor step_work(const HybridLM& model, const Tensor& ids);
};

namespace {

Tensor index_tensor(const std::vector<int64_t>& values, const Shape& shape, Device device) {
  return Tensor::from_values(std::vector<double>(values.begin(), values.end()), shape, DType::i32).to(device);
}

bool ends_with(const std::string& text, const std::string& suffix) {
  return text.size() >= suffix.size() && text.compare(text.size() - suffix.size(), suffix.size(), suffix) == 0;
}

}  // namespace

Session::Session(const HybridLM& model, SessionOptions options)
    : model_(model), options_(options), state_(std::make_unique<State>()) {
  BRAID_CHECK(options.batch >= 1, "session batch must be at least 1, got ", options.batch);
  BRAID_CHECK(options.max_length >= 1, "session max_length must be at least 1, got ", options.max_length);
  BRAID_CHECK(options.prefill_chunk >= 0, "prefill_chunk must be >= 0, got ", options.prefill_chunk);
  const Device device = model.device();
  const DType dtype = model.activation_dtype();
  BRAID_CHECK(device.is_cuda() || dtype == DType::f32 || dtype == DType::f64,
              "a CPU session computes in f32, got ", dtype_name(dtype));
  const ModelConfig& config = model.config();
  for (const Block* block : model.blocks())
    state_->caches.push_back(block->mixer().allocate_cache(options.batch, options.max_length, dtype, device));
  for (const LayerCache& cache : state_->caches)
    for (const Tensor* t : {&cache.k, &cache.v, &cache.conv, &cache.ssm})
      if (t->defined()) state_->bytes += int64_t(t->nbytes());
  state_->window = config.sliding_window.window;
  state_->sink = config.sliding_window.sink;
  state_->window_capacity = std::min(options.max_length, state_->window + state_->sink);
  state_->lengths.assign(size_t(options.batch), 0);
  state_->indices = Tensor::zeros({5, options.batch}, DType::i32, device);
  // Matrices (Linear weights and the tied embedding / LM head) in the activation dtype, once. The
  // depthwise conv weight stays fp32: the conv kernels read fp32 parameters.
  for (const Parameter& parameter : model.named_parameters()) {
    const Tensor& value = parameter.variable->value;
    if (value.dim() != 2 || value.dtype() == dtype || ends_with(parameter.name, "conv.weight")) continue;
    state_->weights.add(parameter.variable, value.to(dtype));
    state_->converted = true;
  }
}

Session::~Session() = default;

int64_t Session::length(int64_t sequence) const {
  BRAID_CHECK(sequence >= 0 && sequence < options_.batch, "sequence ", sequence, " out of range for batch ",
              options_.batch);
  return state_->lengths[size_t(sequence)];
}

int64_t Session::cache_bytes() const { return state_->bytes; }

bool Session::decode_graph_captured() const {
#ifdef BRAID_CUDA
  return state_->graph.captured();
#else
  return false;
#endif
}

namespace {

// Next-token logits (batch, vocab) fp32 from the final hidden states (batch, 1, d).
Tensor head_logits(const HybridLM& model, const autograd::Var& hidden, const InferenceStep& step) {
  autograd::Var logits = ops::linear_of_constant_weight(hidden, step.weight(model.embedding().weight()));
  return ops::cast(logits, DType::f32)->value.reshape({hidden->value.size(0), model.config().vocab_size});
}

}  // namespace

Tensor Session::prefill(const std::vector<std::vector<uint32_t>>& prompts) {
  BRAID_CHECK(int64_t(prompts.size()) == options_.batch, "prefill got ", prompts.size(),
              " prompts for a session of batch ", options_.batch);
  for (size_t b = 0; b < prompts.size(); ++b) {
    BRAID_CHECK(!prompts[b].empty(), "prompt ", b, " is empty");
    BRAID_CHECK(int64_t(prompts[b].size()) <= options_.max_length, "prompt ", b, " has ", prompts[b].size(),
                " tokens, more than the session's max_length ", options_.max_length);
    for (uint32_t token : prompts[b])
      BRAID_CHECK(int64_t(token) < model_.config().vocab_size, "prompt ", b, " holds token ", token,
                  " outside the vocabulary of ", model_.config().vocab_size);
  }
  autograd::NoGradScope no_grad;
  const Device device = model_.device();
  std::vector<autograd::Var> last;  // each sequence's final hidden state (1, 1, d)
  for (size_t b = 0; b < prompts.size(); ++b) {
    const std::vector<uint32_t>& prompt = prompts[b];
    const int64_t total = int64_t(prompt.size());
    const int64_t chunk = options_.prefill_chunk > 0 ? options_.prefill_chunk : total;
    state_->lengths[b] = 0;
    for (int64_t start = 0; start < total; start += chunk) {
      const int64_t time = std::min(chunk, total - start);
      std::vector<double> ids(prompt.begin() + start, prompt.begin() + start + time);
      InferenceStep step;
      step.row = int64_t(b);
      step.start = start;
      step.weights = &state_->weights;
      autograd::Var hidden = model_.hidden_cached(
          autograd::leaf(Tensor::from_values(ids, {1, time}, DType::i32).to(device)), state_->caches, step);
      if (start + time == total) last.push_back(ops::narrow(hidden, 1, time - 1, 1));
      state_->lengths[b] = start + time;
    }
  }
  state_->indices.narrow(0, 4, 1).copy_from(index_tensor(state_->lengths, {1, options_.batch}, Device::cpu()));
  InferenceStep head;
  head.weights = &state_->weights;
  return head_logits(model_, ops::concat(last, 0), head);
}

Tensor Session::State::decode_step(const HybridLM& model, const Tensor& ids, bool use_graph) {
  Tensor logits;
#ifdef BRAID_CUDA
  if (use_graph && ids.device().is_cuda() && !graph_failed) {
    if (!graph.captured()) {
      graph_ids = Tensor::empty(ids.shape(), DType::i32, ids.device());
      graph_failed = !graph.capture([&] { graph_logits = step_work(model, graph_ids); });
      if (graph_failed) graph_logits = Tensor();
    }
    if (graph.captured()) {
      graph_ids.copy_from(ids);
      graph.replay();
      // A copy: the next replay overwrites graph_logits.
      logits = graph_logits.clone();
    }
  }
#else
  (void)use_graph;
#endif
  if (!logits.defined()) logits = step_work(model, ids);
  for (int64_t& length : lengths) ++length;
  return logits;
}

Tensor Session::State::step_work(const HybridLM& model, const Tensor& ids) {
  autograd::NoGradScope no_grad;
  const int64_t batch = ids.size(0);
  ops::decode_step_indices(indices, window, sink, window_capacity);
  InferenceStep step;
  step.weights = &weights;
  step.positions = indices.narrow(0, 0, 1).reshape({batch});
  step.full_slots = indices.narrow(0, 0, 1).reshape({batch, 1});
  step.full_lengths = indices.narrow(0, 1, 1).reshape({batch});
  step.window_slots = indices.narrow(0, 2, 1).reshape({batch, 1});
  step.window_lengths = indices.narrow(0, 3, 1).reshape({batch});
  autograd::Var hidden = model.hidden_cached(autograd::leaf(ids), caches, step);
  return head_logits(model, hidden, step);
}

namespace {

// Every sequence of the batch can take one more token.
void check_room(const std::vector<int64_t>& lengths, int64_t max_length) {
  for (size_t b = 0; b < lengths.size(); ++b) {
    BRAID_CHECK(lengths[b] > 0, "decode before prefill: sequence ", b, " holds no tokens");
    BRAID_CHECK(lengths[b] < max_length, "sequence ", b, " already holds max_length = ", max_length,
                " tokens; decoding one more would exceed the cache");
  }
}

}  // namespace

Tensor Session::decode(const std::vector<uint32_t>& tokens) {
  BRAID_CHECK(int64_t(tokens.size()) == options_.batch, "decode got ", tokens.size(),
              " tokens for a session of batch ", options_.batch);
  check_room(state_->lengths, options_.max_length);
  for (size_t b = 0; b < tokens.size(); ++b)
    BRAID_CHECK(int64_t(tokens[b]) < model_.config().vocab_size, "token ", tokens[b], " of sequence ", b,
                " is outside the vocabulary of ", model_.config().vocab_size);
  std::vector<double> ids(tokens.begin(), tokens.end());
  return state_->decode_step(model_, Tensor::from_values(ids, {options_.batch, 1}, DType::i32).to(model_.device()),
                             options_.cuda_graph);
}

std::vector<std::vector<uint32_t>> Session::generate(
    const std::vector<std::vector<uint32_t>>& prompts, int64_t count, const SamplingConfig& sampling,
    const std::function<void(int64_t sequence, uint32_t token)>& on_token) {
  BRAID_CHECK(count >= 0, "generate: count must be >= 0, got ", count);
  for (size_t b = 0; b < prompts.size(); ++b)
    BRAID_CHECK(int64_t(prompts[b].size()) + count <= options_.max_length, "prompt ", b, " (", prompts[b].size(),
                " tokens) plus ", count, " generated tokens exceed the session's max_length ", options_.max_length);
  Tensor logits = prefill(prompts);
  const int64_t batch = options_.batch, vocab = model_.config().vocab_size;
  const bool on_device = model_.device().is_cuda();
  std::vector<std::vector<uint32_t>> generated(static_cast<size_t>(batch));
  for (int64_t step = 0; step < count; ++step) {
    // On CUDA the sampler runs beside the logits and only the ids come back; the host sampler
    // picks the same tokens (layers/ops/sampling.h).
    Tensor ids;
    std::vector<uint32_t> tokens(static_cast<size_t>(batch));
    if (on_device) {
      ids = ops::sample_tokens(logits, sampling.temperature, sampling.top_k, sampling.top_p, sampling.seed,
                               uint64_t(step));
      const std::vector<double> host = ids.to(Device::cpu()).to_doubles();
      for (int64_t b = 0; b < batch; ++b) tokens[size_t(b)] = uint32_t(host[size_t(b)]);
    } else {
      const std::vector<double> host = logits.to_doubles();
      for (int64_t b = 0; b < batch; ++b) {
        const std::vector<double> row(host.begin() + b * vocab, host.begin() + (b + 1) * vocab);
        tokens[size_t(b)] = sample_token(row, sampling, uint64_t(step));
      }
    }
    for (int64_t b = 0; b < batch; ++b) {
      generated[size_t(b)].push_back(tokens[size_t(b)]);
      if (on_token) on_token(b, tokens[size_t(b)]);
    }
    if (step + 1 == count) break;
    if (on_device) {
      check_room(state_->lengths, options_.max_length);
      logits = state_->decode_step(model_, ids.reshape({batch, 1}), options_.cuda_graph);
    } else {
      logits = decode(tokens);
    }
  }
  return generated;
}

}  // namespace braid::infer
