#include "kernels/cuda/conv1d.h"

#include <climits>
#include <cstdint>

#include "kernels/cuda/common.cuh"

namespace braid::kernels::cuda {

namespace {


// Threads along the channels: a warp reads 32 * VEC consecutive channels of one time row.
constexpr int kLanes = 32;
// Sub-tiles of kSteps time steps per thread; a block stacks kForwardRows / kBackwardRows of them.
constexpr int kSteps = 16;
constexpr int kForwardRows = 4;
constexpr int kBackwardRows = 8;
constexpr int64_t kForwardTile = kForwardRows * kSteps;
constexpr int64_t kBackwardTile = kBackwardRows * kSteps;

// 1 / (1 + e^-v). __fdividef (2 ulp) avoids the IEEE division's slow-path call; for v below about
// -87 the denominator overflows and it returns 0, the limit of the exact value.
__device__ __forceinline__ float sigmoid(float v) { return __fdividef(1.0f, 1.0f + expf(-v)); }

// d SiLU(v) / dv = s (1 + v (1 - s)), s = sigmoid(v); the same formula as the CPU.
__device__ __forceinline__ float silu_grad(float v) {
  const float s = sigmoid(v);
  return s * (1.0f + v * (1.0f - s));
}

// The padded input at time s < T of channels c0 .. c0+VEC-1 of sequence b: x for s >= 0, else the
// initial state (B, C, W-1) (scalar reads: its channels are W-1 apart), else zeros.
template <typename T, int W, int VEC>
__device__ __forceinline__ void load_input(const T* x, const T* initial_state, int64_t b,
                                           int64_t s, int64_t c0, int64_t length,
                                           int64_t channels, float (&values)[VEC]) {
  if (s >= 0) {
    load_floats<T, VEC>(x + (b * length + s) * channels + c0, values);
    return;
  }
#pragma unroll
  for (int j = 0; j < VEC; ++j)
    values[j] = initial_state == nullptr
                    ? 0.0f
                    : to_float(initial_state[(b * channels + c0 + j) * (W - 1) + (W - 1) + s]);
}

// Block (kLanes, kForwardRows), grid (channel tiles, time tiles, B). Thread (x, y) owns channels
// c0 .. c0+VEC-1 and the kSteps steps from s0.
template <typename T, int W, int VEC>
__global__ void __launch_bounds__(kLanes * kForwardRows)
    conv_forward_kernel(const T* __restrict__ x, const float* __restrict__ weight,
                        const float* __restrict__ bias, const T* __restrict__ initial_state,
                        T* __restrict__ out, T* __restrict__ final_state, int64_t length,
                        int64_t channels, bool apply_silu) {
  constexpr int kHistory = W > 1 ? W - 1 : 1;
  const int64_t c0 = (int64_t(blockIdx.x) * kLanes + threadIdx.x) * VEC;
  const int64_t s0 = (int64_t(blockIdx.y) * kForwardRows + threadIdx.y) * kSteps;
  if (c0 >= channels || s0 >= length) return;  // no barrier below
  const int64_t b = blockIdx.z;

  // Stage 1: the taps and bias of the thread's channels.
  float taps[VEC][W], shift[VEC];
#pragma unroll
  for (int j = 0; j < VEC; ++j) {
    shift[j] = bias[c0 + j];
#pragma unroll
    for (int k = 0; k < W; ++k) taps[j][k] = weight[(c0 + j) * W + k];
  }

  // Stage 2: the halo, the W-1 inputs before s0, oldest first.
  float history[kHistory][VEC];
#pragma unroll
  for (int m = 0; m < W - 1; ++m)
    load_input<T, W, VEC>(x, initial_state, b, s0 - (W - 1) + m, c0, length, channels,
                          history[m]);

  // Stage 3: load the sub-tile's rows, all loads in flight at once (bandwidth-bound kernel).
  const int64_t row = (b * length + s0) * channels + c0;
  float inputs[kSteps][VEC];
#pragma unroll
  for (int i = 0; i < kSteps; ++i)
    if (s0 + i < length) load_floats<T, VEC>(x + row + i * channels, inputs[i]);

  // Stage 4: slide the window over the rows: v = bias + taps . (history, current).
#pragma unroll
  for (int i = 0; i < kSteps; ++i) {
    if (s0 + i < length) {
      float result[VEC];
#pragma unroll
      for (int j = 0; j < VEC; ++j) {
        float v = shift[j];
#pragma unroll
        for (int k = 0; k < W - 1; ++k) v += taps[j][k] * history[k][j];
        v += taps[j][W - 1] * inputs[i][j];
        result[j] = apply_silu ? v * sigmoid(v) : v;
      }
      store_floats<T, VEC>(out + row + i * channels, result);
      if constexpr (W > 1) {
#pragma unroll
        for (int m = 0; m < W - 2; ++m)
#pragma unroll
          for (int j = 0; j < VEC; ++j) history[m][j] = history[m + 1][j];
#pragma unroll
        for (int j = 0; j < VEC; ++j) history[W - 2][j] = inputs[i][j];
      }
    }
  }

  // Stage 5: the sub-tile holding t = T-1 now holds the last W-1 inputs: the final state.
  if constexpr (W > 1) {
    if (s0 + kSteps >= length) {
#pragma unroll
      for (int j = 0; j < VEC; ++j)
#pragma unroll
        for (int m = 0; m < W - 1; ++m)
          final_state[(b * channels + c0 + j) * (W - 1) + m] = from_float<T>(history[m][j]);
    }
  }
}

// Block (kLanes, kBackwardRows), grid (channel tiles, time tiles, B). Thread (x, y) owns channels
// c0 .. c0+VEC-1 and writes d_x for the kSteps steps q from s0; it walks t = s0 .. s0+kSteps+W-2,
// recomputing g[t] (which needs x from s0-(W-1)), because d_x[q] reads g[q .. q+W-1]. Each block
// writes its (W+1) sums per channel (taps, then bias) to row blockIdx.z * gridDim.y + blockIdx.y
// of `partials` (rows of C * (W+1) floats). The activation gradients (d_out, d_final_state, d_x,
// d_initial_state) are T like x; everything in registers and `partials` is fp32.
template <typename T, int W, int VEC>
__global__ void __launch_bounds__(kLanes * kBackwardRows, 2)
    conv_backward_kernel(const T* __restrict__ x, const float* __restrict__ weight,
                         const float* __restrict__ bias, const T* __restrict__ initial_state,
                         const T* __restrict__ d_out, const T* __restrict__ d_final_state,
                         T* __restrict__ d_x, T* __restrict__ d_initial_state,
                         float* __restrict__ partials, int64_t length, int64_t channels,
                         bool apply_silu) {
  constexpr int kHistory = W > 1 ? W - 1 : 1;
  constexpr int kSums = W + 1;
  __shared__ float block_sums[kBackwardRows][kLanes][VEC * kSums];
  const int64_t c0 = (int64_t(blockIdx.x) * kLanes + threadIdx.x) * VEC;
  const int64_t s0 = (int64_t(blockIdx.y) * kBackwardRows + threadIdx.y) * kSteps;
  const int64_t b = blockIdx.z;

  float sums[VEC][kSums];
#pragma unroll
  for (int j = 0; j < VEC; ++j)
#pragma unroll
    for (int k = 0; k < kSums; ++k) sums[j][k] = 0.0f;

  if (c0 < channels && s0 < length) {
    // Stage 1: taps, bias, and the input halo before s0.
    float taps[VEC][W], shift[VEC];
#pragma unroll
    for (int j = 0; j < VEC; ++j) {
      shift[j] = bias[c0 + j];
#pragma unroll
      for (int k = 0; k < W; ++k) taps[j][k] = weight[(c0 + j) * W + k];
    }
    float history[kHistory][VEC];    // x at t-(W-1) .. t-1
    float g_history[kHistory][VEC];  // g at t-(W-1) .. t-1; zeros before s0 (used only for q < s0)
#pragma unroll
    for (int m = 0; m < W - 1; ++m) {
      load_input<T, W, VEC>(x, initial_state, b, s0 - (W - 1) + m, c0, length, channels,
                            history[m]);
#pragma unroll
      for (int j = 0; j < VEC; ++j) g_history[m][j] = 0.0f;
    }
    const int64_t q_end = s0 + kSteps < length ? s0 + kSteps : length;
    // The first sub-tile also writes the initial state's gradient (q in [-(W-1), 0)).
    const bool writes_initial = s0 == 0 && d_initial_state != nullptr;
    const int64_t final_start = length - (W - 1);  // q of the first final-state input

    // Stage 2: walk t; at each step g[t] = d_out * SiLU'(v), the sums, and d_x at q = t-(W-1).
#pragma unroll
    for (int i = 0; i < kSteps + W - 1; ++i) {
      const int64_t t = s0 + i;
      float current[VEC], g[VEC];
      if (t < length) {
        float d[VEC];
        const int64_t at = (b * length + t) * channels + c0;
        load_floats<T, VEC>(x + at, current);
        load_floats<T, VEC>(d_out + at, d);
#pragma unroll
        for (int j = 0; j < VEC; ++j) {
          if (apply_silu) {
            float v = shift[j];
#pragma unroll
            for (int k = 0; k < W - 1; ++k) v += taps[j][k] * history[k][j];
            v += taps[j][W - 1] * current[j];
            g[j] = d[j] * silu_grad(v);
          } else {
            g[j] = d[j];
          }
        }
        if (i < kSteps) {  // t in [s0, q_end): this sub-tile's share of the weight/bias sums
#pragma unroll
          for (int j = 0; j < VEC; ++j) {
#pragma unroll
            for (int k = 0; k < W - 1; ++k) sums[j][k] += history[k][j] * g[j];
            sums[j][W - 1] += current[j] * g[j];
            sums[j][W] += g[j];
          }
        }
      } else {  // past the end: g = 0
#pragma unroll
        for (int j = 0; j < VEC; ++j) current[j] = g[j] = 0.0f;
      }

      // d_x[q] = sum_k taps[k] g[q+W-1-k] = taps[0] g[t] + sum_{k>=1} taps[k] g_history[W-1-k].
      const int64_t q = t - (W - 1);
      if (q < q_end && (q >= s0 || writes_initial)) {
        float dx[VEC];
#pragma unroll
        for (int j = 0; j < VEC; ++j) {
          dx[j] = taps[j][0] * g[j];
#pragma unroll
          for (int k = 1; k < W; ++k) dx[j] += taps[j][k] * g_history[W - 1 - k][j];
        }
        if (d_final_state != nullptr && q >= final_start) {  // this input was also copied out
#pragma unroll
          for (int j = 0; j < VEC; ++j)
            dx[j] += to_float(d_final_state[(b * channels + c0 + j) * (W - 1) + (q - final_start)]);
        }
        if (q >= s0) {
          store_floats<T, VEC>(d_x + (b * length + q) * channels + c0, dx);
        } else {
#pragma unroll
          for (int j = 0; j < VEC; ++j)
            d_initial_state[(b * channels + c0 + j) * (W - 1) + (W - 1) + q] = from_float<T>(dx[j]);
        }
      }

      if constexpr (W > 1) {
#pragma unroll
        for (int m = 0; m < W - 2; ++m)
#pragma unroll
          for (int j = 0; j < VEC; ++j) {
            history[m][j] = history[m + 1][j];
            g_history[m][j] = g_history[m + 1][j];
          }
#pragma unroll
        for (int j = 0; j < VEC; ++j) {
          history[W - 2][j] = current[j];
          g_history[W - 2][j] = g[j];
        }
      }
    }
  }

  // Stage 3: the block's sums per channel, over its sub-tiles in order (fixed, so deterministic).
#pragma unroll
  for (int j = 0; j < VEC; ++j)
#pragma unroll
    for (int k = 0; k < kSums; ++k)
      block_sums[threadIdx.y][threadIdx.x][j * kSums + k] = sums[j][k];
  __syncthreads();
  if (threadIdx.y == 0 && c0 < channels) {
    float* row = partials + (int64_t(blockIdx.z) * gridDim.y + blockIdx.y) * channels * kSums +
                 c0 * kSums;
    for (int e = 0; e < VEC * kSums; ++e) {
      float total = 0.0f;
#pragma unroll
      for (int r = 0; r < kBackwardRows; ++r) total += block_sums[r][threadIdx.x][e];
      row[e] = total;
    }
  }
}

// d_weight and d_bias: entry e = c * (W+1) + k of every partials row, added over the rows in
// order. One thread per entry; consecutive threads read consecutive floats of a row.
__global__ void conv_parameter_grad_kernel(const float* __restrict__ partials, int64_t rows,
                                           int64_t channels, int width,
                                           float* __restrict__ d_weight,
                                           float* __restrict__ d_bias) {
  const int64_t sums = width + 1;
  const int64_t e = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (e >= channels * sums) return;
  const int64_t stride = channels * sums;
  float total = 0.0f;
#pragma unroll 8
  for (int64_t r = 0; r < rows; ++r) total += partials[r * stride + e];
  const int64_t c = e / sums, k = e % sums;
  if (k < width) d_weight[c * width + k] = total;
  else d_bias[c] = total;
}

bool aligned(const void* pointer, size_t bytes) {
  return reinterpret_cast<uintptr_t>(pointer) % bytes == 0;
}

// Runs body.template operator()<W>() for the compiled widths.
template <typename Body>
void dispatch_width(int64_t width, Body&& body) {
  switch (width) {
    case 1: body.template operator()<1>(); return;
    case 2: body.template operator()<2>(); return;
    case 3: body.template operator()<3>(); return;
    case 4: body.template operator()<4>(); return;
    default:
      BRAID_FAIL("conv1d: the CUDA kernel supports conv widths 1 to ", kConv1dMaxWidth,
                 ", got W = ", width);
  }
}

void check_sizes(int64_t batch, int64_t length, int64_t channels, int64_t width,
                 int64_t time_tile) {
  BRAID_CHECK(batch >= 0 && length >= 0 && channels >= 0 && width >= 1,
              "conv1d: bad sizes B ", batch, ", T ", length, ", C ", channels, ", W ", width);
  BRAID_CHECK(batch <= 65535 && ceil_div(length, time_tile) <= 65535 &&
                  ceil_div(channels, kLanes) <= INT_MAX,
              "conv1d: (B, T, C) = (", batch, ", ", length, ", ", channels,
              ") is too large for one launch");
}

}  // namespace

void causal_conv1d_forward(const void* x, const float* weight, const float* bias,
                           const void* initial_state, void* out, void* final_state, int64_t batch,
                           int64_t length, int64_t channels, int64_t width, bool apply_silu,
                           DType dtype, cudaStream_t stream) {
  check_sizes(batch, length, channels, width, kForwardTile);
  if (batch == 0 || channels == 0) return;
  dispatch_activation("conv1d", dtype, [&]<typename T>() {
    const size_t state_bytes = size_t(batch * channels * (width - 1)) * sizeof(T);
    if (length == 0) {  // no inputs: the final state is the initial one (or zeros)
      if (state_bytes == 0) return;
      if (initial_state != nullptr)
        CUDA_CHECK(cudaMemcpyAsync(final_state, initial_state, state_bytes,
                                   cudaMemcpyDeviceToDevice, stream));
      else CUDA_CHECK(cudaMemsetAsync(final_state, 0, state_bytes, stream));
      return;
    }
    dispatch_width(width, [&]<int W>() {
      auto launch = [&]<int VEC>() {
        const dim3 grid(unsigned(ceil_div(channels, kLanes * VEC)),
                        unsigned(ceil_div(length, kForwardTile)), unsigned(batch));
        conv_forward_kernel<T, W, VEC><<<grid, dim3(kLanes, kForwardRows), 0, stream>>>(
            static_cast<const T*>(x), weight, bias, static_cast<const T*>(initial_state),
            static_cast<T*>(out), static_cast<T*>(final_state), length, channels, apply_silu);
        CUDA_CHECK_LAST_LAUNCH();
      };
      if (channels % 4 == 0 && aligned(x, 4 * sizeof(T)) && aligned(out, 4 * sizeof(T)))
        launch.template operator()<4>();
      else launch.template operator()<1>();
    });
  });
}

size_t causal_conv1d_backward_workspace_floats(int64_t batch, int64_t length, int64_t channels,
                                               int64_t width) {
  return size_t(batch * ceil_div(length, kBackwardTile) * channels * (width + 1));
}

void causal_conv1d_backward(const void* x, const float* weight, const float* bias,
                            const void* initial_state, const void* d_out,
                            const void* d_final_state, void* d_x, float* d_weight,
                            float* d_bias, void* d_initial_state, float* workspace,
                            int64_t batch, int64_t length, int64_t channels, int64_t width,
                            bool apply_silu, DType dtype, cudaStream_t stream) {
  check_sizes(batch, length, channels, width, kBackwardTile);
  BRAID_CHECK(width == 1 || (initial_state == nullptr) == (d_initial_state == nullptr),
              "conv1d backward: initial_state and d_initial_state must be both given or both null");
  if (channels == 0) return;
  if (batch == 0 || length == 0) {
    // No (b, t) terms: zero parameter gradients; the initial state only feeds the final state.
    CUDA_CHECK(cudaMemsetAsync(d_weight, 0, size_t(channels * width) * sizeof(float), stream));
    CUDA_CHECK(cudaMemsetAsync(d_bias, 0, size_t(channels) * sizeof(float), stream));
    const size_t state_bytes = size_t(batch * channels * (width - 1)) * dtype_size(dtype);
    if (d_initial_state != nullptr && state_bytes > 0) {
      if (d_final_state != nullptr)
        CUDA_CHECK(cudaMemcpyAsync(d_initial_state, d_final_state, state_bytes,
                                   cudaMemcpyDeviceToDevice, stream));
      else CUDA_CHECK(cudaMemsetAsync(d_initial_state, 0, state_bytes, stream));
    }
    return;
  }
  const int64_t time_tiles = ceil_div(length, kBackwardTile);
  dispatch_activation("conv1d", dtype, [&]<typename T>() {
    dispatch_width(width, [&]<int W>() {
      auto launch = [&]<int VEC>() {
        const dim3 grid(unsigned(ceil_div(channels, kLanes * VEC)), unsigned(time_tiles),
                        unsigned(batch));
        conv_backward_kernel<T, W, VEC><<<grid, dim3(kLanes, kBackwardRows), 0, stream>>>(
            static_cast<const T*>(x), weight, bias, static_cast<const T*>(initial_state),
            static_cast<const T*>(d_out), static_cast<const T*>(d_final_state),
            static_cast<T*>(d_x), static_cast<T*>(d_initial_state), workspace, length, channels,
            apply_silu);
        CUDA_CHECK_LAST_LAUNCH();
      };
      if (channels % 4 == 0 && aligned(x, 4 * sizeof(T)) && aligned(d_out, 4 * sizeof(T)) &&
          aligned(d_x, 4 * sizeof(T)))
        launch.template operator()<4>();
      else launch.template operator()<1>();
    });
  });
  const int64_t entries = channels * (width + 1);
  conv_parameter_grad_kernel<<<unsigned(ceil_div(entries, 256)), 256, 0, stream>>>(
      workspace, batch * time_tiles, channels, int(width), d_weight, d_bias);
  CUDA_CHECK_LAST_LAUNCH();
}

}  // namespace braid::kernels::cuda
