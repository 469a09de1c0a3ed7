#include "layers/attention.h"

#include <algorithm>

#include "layers/basic.h"
#include "layers/inference_cache.h"
#include "layers/ops/decode.h"
#include "layers/ops/layout.h"

namespace braid {

Attention::Attention(int64_t d_model, const AttentionShape& shape, bool with_output,
                     const TensorOptions& options, double init_std, double output_std)
    : shape_(shape) {
  const int64_t q_width = shape.n_heads * shape.qk_head_dim;
  q_proj_ = add_module("q_proj", std::make_unique<Linear>(d_model, q_width, options, init_std));
  k_proj_ = add_module("k_proj", std::make_unique<Linear>(d_model, shape.n_kv_heads * shape.qk_head_dim,
                                                          options, init_std));
  v_proj_ = add_module("v_proj", std::make_unique<Linear>(d_model, shape.n_kv_heads * shape.v_head_dim,
                                                          options, init_std));
  if (with_output)
    o_proj_ = add_module("o_proj", std::make_unique<Linear>(shape.n_heads * shape.v_head_dim, d_model,
                                                            options, output_std));
}

Attention::Outputs Attention::attend(const autograd::Var& x) const {
  const int64_t batch = x->value.size(0), time = x->value.size(1);
  auto heads_of = [&](const autograd::Var& projected, int64_t heads, int64_t dim) {
    return ops::reshape(projected, {batch, time, heads, dim});
  };
  autograd::Var q = ops::rope(heads_of(q_proj_->forward(x), shape_.n_heads, shape_.qk_head_dim), shape_.rope);
  autograd::Var k = ops::rope(heads_of(k_proj_->forward(x), shape_.n_kv_heads, shape_.qk_head_dim), shape_.rope);
  autograd::Var value = v_proj_->forward(x);
  autograd::Var v = heads_of(value, shape_.n_kv_heads, shape_.v_head_dim);
  autograd::Var heads = ops::attention(q, k, v, shape_.mask);
  return {ops::reshape(heads, {batch, time, shape_.n_heads * shape_.v_head_dim}), value};
}

autograd::Var Attention::forward(const autograd::Var& x) const {
  BRAID_CHECK(o_proj_ != nullptr, "attention branch without an output projection used as a mixer");
  return o_proj_->forward(attend(x).heads);
}

LayerCache Attention::allocate_cache(int64_t batch, int64_t max_length, DType dtype, Device device) const {
  const ops::AttentionOptions& mask = shape_.mask;
  const int64_t capacity = mask.window > 0 ? std::min(max_length, mask.sink + mask.window) : max_length;
  LayerCache cache;
  cache.k = Tensor::zeros({batch, shape_.n_kv_heads, capacity, shape_.qk_head_dim}, dtype, device);
  cache.v = Tensor::zeros({batch, shape_.n_kv_heads, capacity, shape_.v_head_dim}, dtype, device);
  return cache;
}

namespace {

// An i32 index tensor on `device` from host values.
Tensor index_tensor(const std::vector<int64_t>& values, const Shape& shape, Device device) {
  return Tensor::from_values(std::vector<double>(values.begin(), values.end()), shape, DType::i32).to(device);
}

// The cached keys (or values) of `row` (1, H, S, D) at `slots`, then room for `extra` more slots:
// (1, H, slots.size() + extra, D). Runs of consecutive slots move as one copy.
Tensor gather_slots(const Tensor& row, const std::vector<int64_t>& slots, int64_t extra) {
  Tensor out = Tensor::empty({1, row.size(1), int64_t(slots.size()) + extra, row.size(3)}, row.dtype(), row.device());
  for (size_t begin = 0; begin < slots.size();) {
    size_t end = begin + 1;
    while (end < slots.size() && slots[end] == slots[end - 1] + 1) ++end;
    const int64_t count = int64_t(end - begin);
    out.narrow(2, int64_t(begin), count).copy_from(row.narrow(2, slots[begin], count));
    begin = end;
  }
  return out;
}

}  // namespace

Attention::Outputs Attention::attend_cached(const autograd::Var& x, LayerCache& cache,
                                            const InferenceStep& step) const {
  const int64_t batch = x->value.size(0), time = x->value.size(1);
  auto heads_of = [&](const autograd::Var& projected, int64_t heads, int64_t dim) {
    return ops::reshape(projected, {batch, time, heads, dim})->value;
  };
  const std::vector<autograd::Var> qkv = project_all({q_proj_, k_proj_, v_proj_}, x, step);
  Tensor q = heads_of(qkv[0], shape_.n_heads, shape_.qk_head_dim);
  Tensor k = heads_of(qkv[1], shape_.n_kv_heads, shape_.qk_head_dim);
  const autograd::Var& value = qkv[2];
  Tensor v = heads_of(value, shape_.n_kv_heads, shape_.v_head_dim);
  const int64_t window = shape_.mask.window, sink = shape_.mask.sink;
  const bool windowed = window > 0;
  const Device device = x->value.device();
  Tensor heads;
  if (step.decoding()) {
    q = ops::rope_at_positions(q, step.positions, shape_.rope);
    k = ops::rope_at_positions(k, step.positions, shape_.rope);
    const Tensor& slots = windowed ? step.window_slots : step.full_slots;
    ops::kv_cache_write(cache.k, k, slots);
    ops::kv_cache_write(cache.v, v, slots);
    // Every slot a sequence holds is visible to its newest token (a ring keeps exactly the window).
    heads = ops::cache_attention(q, cache.k, cache.v, windowed ? step.window_lengths : step.full_lengths,
                                 {0, 0, shape_.mask.scale});
  } else {
    q = ops::rope(autograd::leaf(q), shape_.rope, step.start)->value;
    k = ops::rope(autograd::leaf(k), shape_.rope, step.start)->value;
    const Tensor k_row = cache.k.narrow(0, step.row, 1), v_row = cache.v.narrow(0, step.row, 1);
    const int64_t end = step.start + time;
    // The chunk's slots; in a ring, a token that a later token of the same chunk overwrites is skipped.
    std::vector<int64_t> slots(static_cast<size_t>(time));
    for (int64_t t = 0; t < time; ++t) {
      const int64_t position = step.start + t;
      slots[size_t(t)] = !windowed ? position
                         : (position < sink || position >= end - window) ? window_slot(position, window, sink)
                                                                          : -1;
    }
    const Tensor chunk_slots = index_tensor(slots, {1, time}, device);
    if (step.start == 0) {
      heads = ops::attention(autograd::leaf(q), autograd::leaf(k), autograd::leaf(v), shape_.mask)->value;
    } else if (!windowed) {
      ops::kv_cache_write(k_row, k, chunk_slots);
      ops::kv_cache_write(v_row, v, chunk_slots);
      heads = ops::cache_attention(q, k_row, v_row, index_tensor({end}, {1}, device), shape_.mask);
    } else {
      // The ring's slots are out of position order: lay the keys this chunk can see out in order
      // (the sink, then the last `window` positions), then the chunk. Positions past the sink keep
      // their distances, so the window + sink mask holds in these slot coordinates.
      std::vector<int64_t> held;
      for (int64_t p = 0; p < std::min(sink, step.start); ++p) held.push_back(p);
      for (int64_t p = std::max(sink, step.start - window); p < step.start; ++p)
        held.push_back(window_slot(p, window, sink));
      Tensor keys = gather_slots(k_row, held, time), values = gather_slots(v_row, held, time);
      std::vector<int64_t> appended(static_cast<size_t>(time));
      for (int64_t t = 0; t < time; ++t) appended[size_t(t)] = int64_t(held.size()) + t;
      const Tensor appended_slots = index_tensor(appended, {1, time}, device);
      ops::kv_cache_write(keys, k, appended_slots);
      ops::kv_cache_write(values, v, appended_slots);
      heads = ops::cache_attention(q, keys, values, index_tensor({keys.size(2)}, {1}, device), shape_.mask);
    }
    if (step.start == 0 || windowed) {
      ops::kv_cache_write(k_row, k, chunk_slots);
      ops::kv_cache_write(v_row, v, chunk_slots);
    }
  }
  return {autograd::leaf(heads.reshape({batch, time, shape_.n_heads * shape_.v_head_dim})), value};
}

autograd::Var Attention::forward_cached(const autograd::Var& x, LayerCache& cache,
                                        const InferenceStep& step) const {
  BRAID_CHECK(o_proj_ != nullptr, "attention branch without an output projection used as a mixer");
  return project(*o_proj_, attend_cached(x, cache, step).heads, &step);
}

}  // namespace braid
