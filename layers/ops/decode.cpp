#include "layers/ops/decode.h"

#include <algorithm>
#include <cmath>

#include "kernels/cpu/decode.h"
#include "layers/ops/checks.h"
#include "layers/ops/dispatch.h"
#include "layers/ops/layout.h"

#ifdef BRAID_CUDA
#include "kernels/cuda/decode.h"
#include "runtime/cuda_stream.h"
#include "runtime/device_copy.h"
#endif

namespace braid::ops {

namespace {

// An i32 index tensor of `shape` on x's device.
void check_index(const char* op, const char* what, const Tensor& index, const Shape& shape, const Tensor& x) {
  check_shape(op, what, index, shape);
  check_dtype(op, what, index, DType::i32);
  BRAID_CHECK(index.device() == x.device(), op, ": ", what, " is on ", index.device().to_string(),
              " but the input is on ", x.device().to_string());
  BRAID_CHECK(index.is_contiguous(), op, ": ", what, " must be contiguous");
}

void check_contiguous(const char* op, const char* what, const Tensor& tensor) {
  BRAID_CHECK(tensor.is_contiguous(), op, ": ", what, " ", tensor.describe(), " must be contiguous (it is updated in place)");
}

}  // namespace

Tensor cache_attention(const Tensor& q_in, const Tensor& k_cache, const Tensor& v_cache,
                       const Tensor& lengths, const AttentionOptions& options) {
  const char* op = "cache_attention";
  check_dim(op, "q (B, Tq, Hq, Dqk)", q_in, 4);
  check_dim(op, "k_cache (B, Hk, S, Dqk)", k_cache, 4);
  check_dim(op, "v_cache (B, Hk, S, Dv)", v_cache, 4);
  check_backend(op, "q", q_in);
  check_same_type(op, "q", q_in, "k_cache", k_cache);
  check_same_type(op, "q", q_in, "v_cache", v_cache);
  const int64_t batch = q_in.size(0), time = q_in.size(1), q_heads = q_in.size(2), qk_dim = q_in.size(3);
  const int64_t kv_heads = k_cache.size(1), capacity = k_cache.size(2), v_dim = v_cache.size(3);
  BRAID_CHECK(k_cache.size(0) == batch && k_cache.size(3) == qk_dim && kv_heads > 0 && q_heads % kv_heads == 0,
              op, ": q has shape ", shape_str(q_in.shape()), " but k_cache has shape ", shape_str(k_cache.shape()));
  check_shape(op, "v_cache", v_cache, {batch, kv_heads, capacity, v_dim});
  check_index(op, "lengths", lengths, {batch}, q_in);
  check_contiguous(op, "k_cache", k_cache);
  check_contiguous(op, "v_cache", v_cache);
  BRAID_CHECK(time <= capacity, op, ": ", time, " queries do not fit a cache of ", capacity, " slots");
  const Tensor q = q_in.contiguous();
  Tensor out = Tensor::empty({batch, time, q_heads, v_dim}, q.dtype(), q.device());
  const double scale = options.scale > 0 ? options.scale : 1.0 / std::sqrt(double(qk_dim));
  if (out.numel() == 0) return out;
#ifdef BRAID_CUDA
  if (q.device().is_cuda()) {
    cuda_set_device(q.device().index);
    kernels::cuda::CacheAttentionDims dims{batch, time, q_heads, kv_heads, qk_dim, v_dim, capacity};
    const size_t floats = kernels::cuda::cache_attention_workspace_floats(dims);
    Tensor workspace = floats ? Tensor::empty({int64_t(floats)}, DType::f32, q.device()) : Tensor();
    kernels::cuda::cache_attention(q.raw_data(), k_cache.raw_data(), v_cache.raw_data(),
                                   lengths.data<int32_t>(), out.raw_data(), dims, options.window,
                                   options.sink, float(scale),
                                   floats ? workspace.data<float>() : nullptr, q.dtype(), compute_stream());
    return out;
  }
#endif
  // Host lengths are checked here; on CUDA they are the caller's contract (they stay on the device).
  for (int64_t b = 0; b < batch; ++b) {
    const int64_t length = lengths.data<int32_t>()[b];
    BRAID_CHECK(length >= time && length <= capacity, op, ": sequence ", b, " holds ", length,
                " keys, needs ", time, "..", capacity);
  }
  dispatch_cpu_float(op, q.dtype(), [&]<typename T>() {
    kernels::cpu::cache_attention<T>(q.data<T>(), k_cache.data<T>(), v_cache.data<T>(), lengths.data<int32_t>(),
                                     out.data<T>(), {batch, time, q_heads, kv_heads, qk_dim, v_dim, capacity},
                                     {options.window, options.sink}, scale);
  });
  return out;
}

void kv_cache_write(const Tensor& cache, const Tensor& values_in, const Tensor& slots) {
  const char* op = "kv_cache_write";
  check_dim(op, "cache (B, H, S, D)", cache, 4);
  check_dim(op, "values (B, Tq, H, D)", values_in, 4);
  check_backend(op, "values", values_in);
  check_same_type(op, "cache", cache, "values", values_in);
  check_contiguous(op, "cache", cache);
  const int64_t batch = cache.size(0), heads = cache.size(1), capacity = cache.size(2), dim = cache.size(3);
  const int64_t time = values_in.size(1);
  check_shape(op, "values", values_in, {batch, time, heads, dim});
  check_index(op, "slots", slots, {batch, time}, values_in);
  const Tensor values = values_in.contiguous();
  if (values.numel() == 0) return;
#ifdef BRAID_CUDA
  if (cache.device().is_cuda()) {
    cuda_set_device(cache.device().index);
    kernels::cuda::kv_cache_write(cache.raw_data(), values.raw_data(), slots.data<int32_t>(), batch, time,
                                  heads, capacity, dim, cache.dtype(), compute_stream());
    return;
  }
#endif
  for (int64_t i = 0; i < batch * time; ++i)
    BRAID_CHECK(slots.data<int32_t>()[i] < capacity, op, ": slot ", slots.data<int32_t>()[i],
                " is past the cache's ", capacity, " slots");
  dispatch_cpu_float(op, cache.dtype(), [&]<typename T>() {
    kernels::cpu::kv_cache_write<T>(cache.data<T>(), values.data<T>(), slots.data<int32_t>(), batch, time,
                                    heads, capacity, dim);
  });
}

Tensor rope_at_positions(const Tensor& x_in, const Tensor& positions, const RopeConfig& config) {
  const char* op = "rope_at_positions";
  check_dim(op, "x (B, Tq, H, D)", x_in, 4);
  check_backend(op, "x", x_in);
  check_index(op, "positions", positions, {x_in.size(0)}, x_in);
  const int64_t head_dim = x_in.size(3);
  const std::vector<double> frequencies = rope_inverse_frequencies(config, head_dim);
  const Tensor x = x_in.contiguous();
  Tensor out = Tensor::empty(x.shape(), x.dtype(), x.device());
  if (x.numel() == 0) return out;
#ifdef BRAID_CUDA
  if (x.device().is_cuda()) {
    BRAID_CHECK(head_dim / 2 <= kernels::cuda::kDecodeRopeMaxHalfDim, op, ": head_dim ", head_dim,
                " exceeds the kernel's ", 2 * kernels::cuda::kDecodeRopeMaxHalfDim);
    cuda_set_device(x.device().index);
    kernels::cuda::rope_at_positions(x.raw_data(), out.raw_data(), frequencies.data(), positions.data<int32_t>(),
                                     x.size(0), x.size(1), x.size(2), head_dim, x.dtype(), compute_stream());
    return out;
  }
#endif
  dispatch_cpu_float(op, x.dtype(), [&]<typename T>() {
    kernels::cpu::rope_at_positions<T>(x.data<T>(), out.data<T>(), frequencies.data(), positions.data<int32_t>(),
                                       x.size(0), x.size(1), x.size(2), head_dim);
  });
  return out;
}

Tensor conv_state_update(const Tensor& state, const Tensor& x_in, const Tensor& weight_in,
                         const Tensor& bias_in, bool silu) {
  const char* op = "conv_state_update";
  check_dim(op, "x (B, C)", x_in, 2);
  check_backend(op, "x", x_in);
  const int64_t batch = x_in.size(0), channels = x_in.size(1);
  BRAID_CHECK(weight_in.dim() == 2 && weight_in.size(0) == channels && weight_in.size(1) >= 1, op,
              ": weight has shape ", shape_str(weight_in.shape()), " but x has shape ", shape_str(x_in.shape()));
  const int64_t width = weight_in.size(1);
  check_shape(op, "bias", bias_in, {channels});
  check_param(op, "weight", weight_in, x_in);
  check_param(op, "bias", bias_in, x_in);
  check_shape(op, "state", state, {batch, channels, width - 1});
  check_same_type(op, "x", x_in, "state", state);
  check_contiguous(op, "state", state);
  // x may be columns of the in_proj output, read in place (element by element: any alignment).
  const Tensor x = rows_in_place(x_in, 1), weight = weight_in.contiguous(), bias = bias_in.contiguous();
  const int64_t x_row_stride = row_stride(x);
  Tensor out = Tensor::empty(x.shape(), x.dtype(), x.device());
  if (x.numel() == 0) return out;
#ifdef BRAID_CUDA
  if (x.device().is_cuda()) {
    cuda_set_device(x.device().index);
    kernels::cuda::conv_state_update(state.raw_data(), x.raw_data(), x_row_stride, weight.data<float>(),
                                     bias.data<float>(), out.raw_data(), batch, channels, width, silu, x.dtype(),
                                     compute_stream());
    return out;
  }
#endif
  dispatch_cpu_float(op, x.dtype(), [&]<typename T>() {
    kernels::cpu::conv_state_update<T>(state.data<T>(), x.data<T>(), x_row_stride, weight.data<T>(), bias.data<T>(),
                                       out.data<T>(), batch, channels, width, silu);
  });
  return out;
}

void decode_step_indices(const Tensor& indices, int64_t window, int64_t sink, int64_t window_capacity) {
  const char* op = "decode_step_indices";
  BRAID_CHECK(indices.dim() == 2 && indices.size(0) == 5, op, ": indices must be (5, batch), got ",
              shape_str(indices.shape()));
  check_dtype(op, "indices", indices, DType::i32);
  check_contiguous(op, "indices", indices);
  BRAID_CHECK(window >= 0 && sink >= 0 && window_capacity >= 0, op, ": window ", window, ", sink ", sink,
              " and window_capacity ", window_capacity, " must be >= 0");
  const int64_t batch = indices.size(1);
#ifdef BRAID_CUDA
  if (indices.device().is_cuda()) {
    cuda_set_device(indices.device().index);
    kernels::cuda::decode_step_indices(indices.data<int32_t>(), batch, window, sink, window_capacity,
                                       compute_stream());
    return;
  }
#endif
  int32_t* row = indices.data<int32_t>();
  for (int64_t b = 0; b < batch; ++b) {
    const int64_t length = row[4 * batch + b];
    row[b] = int32_t(length);
    row[batch + b] = int32_t(length + 1);
    row[2 * batch + b] = int32_t(window == 0 || length < sink ? length : sink + (length - sink) % window);
    row[3 * batch + b] = int32_t(std::min(length + 1, window_capacity));
    row[4 * batch + b] = int32_t(length + 1);
  }
}

Tensor ssm_state_update(const Tensor& state, const Tensor& x_in, const Tensor& dt_in, const Tensor& dt_bias,
                        const Tensor& A_log, const Tensor& B_in, const Tensor& C_in, const Tensor& D,
                        const SsdOptions& options) {
  const char* op = "ssm_state_update";
  check_dim(op, "state (B, H, P, N)", state, 4);
  check_dim(op, "x (B, H*P)", x_in, 2);
  check_dim(op, "B (B, G*N)", B_in, 2);
  check_backend(op, "x", x_in);
  const int64_t batch = state.size(0), heads = state.size(1), head_dim = state.size(2), n = state.size(3);
  check_shape(op, "x", x_in, {batch, heads * head_dim});
  BRAID_CHECK(B_in.size(0) == batch && n > 0 && B_in.size(1) % n == 0 && B_in.size(1) > 0 &&
                  heads % (B_in.size(1) / n) == 0,
              op, ": state has shape ", shape_str(state.shape()), " but B has shape ", shape_str(B_in.shape()));
  const int64_t groups = B_in.size(1) / n;
  check_shape(op, "C", C_in, B_in.shape());
  check_shape(op, "dt_raw", dt_in, {batch, heads});
  for (const Tensor* t : {&B_in, &C_in, &dt_in}) check_same_type(op, "x", x_in, "B, C and dt_raw", *t);
  check_shape(op, "dt_bias", dt_bias, {heads});
  check_shape(op, "A_log", A_log, {heads});
  check_shape(op, "D", D, {heads});
  check_param(op, "dt_bias", dt_bias, x_in);
  check_param(op, "A_log", A_log, x_in);
  check_param(op, "D", D, x_in);
  check_param(op, "state", state, x_in);
  check_contiguous(op, "state", state);
  // x, B, C (columns of the conv output) and dt (of in_proj's) read in place, element by element.
  const Tensor x = rows_in_place(x_in, 1), dt = rows_in_place(dt_in, 1), B = rows_in_place(B_in, 1),
               C = rows_in_place(C_in, 1);
  Tensor y = Tensor::empty(x.shape(), x.dtype(), x.device());
  if (y.numel() == 0) return y;
#ifdef BRAID_CUDA
  if (x.device().is_cuda()) {
    cuda_set_device(x.device().index);
    kernels::cuda::SsmStepDims dims{batch, heads, head_dim, groups, n, float(options.dt_min), float(options.dt_max),
                                    row_stride(x), row_stride(dt), row_stride(B), row_stride(C)};
    kernels::cuda::ssm_state_update(state.data<float>(), x.raw_data(), dt.raw_data(), dt_bias.contiguous().data<float>(),
                                    A_log.contiguous().data<float>(), B.raw_data(), C.raw_data(),
                                    D.contiguous().data<float>(), y.raw_data(), dims, x.dtype(), compute_stream());
    return y;
  }
#endif
  dispatch_cpu_float(op, x.dtype(), [&]<typename T>() {
    kernels::cpu::SsmStepDims dims{batch, heads, head_dim, groups, n, options.dt_min, options.dt_max,
                                   row_stride(x), row_stride(dt), row_stride(B), row_stride(C)};
    kernels::cpu::ssm_state_update<T>(state.data<T>(), x.data<T>(), dt.data<T>(), dt_bias.contiguous().data<T>(),
                                      A_log.contiguous().data<T>(), B.data<T>(), C.data<T>(),
                                      D.contiguous().data<T>(), y.data<T>(), dims);
  });
  return y;
}

}  // namespace braid::ops
