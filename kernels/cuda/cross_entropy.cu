#include "kernels/cuda/cross_entropy.h"

#include <algorithm>
#include <cmath>
#include <type_traits>

#include "kernels/cuda/common.cuh"

namespace braid::kernels::cuda {

namespace {

// Row kernel block sizes: wide rows (LM vocabularies) spread over 512 threads, short ones over 128.
constexpr int kWideRowThreads = 512, kNarrowRowThreads = 128;
constexpr int64_t kWideRowMin = 4096;
// ops::cross_entropy backward: each block writes one tile of one row.
constexpr int kBackwardThreads = 256;
constexpr int64_t kBackwardTile = 4096;
constexpr int kMeanThreads = 512;
constexpr int kElementwiseThreads = 256;
constexpr int64_t kElementwiseMaxBlocks = 132 * 32;

// Elements of T in one 16-byte vector.
template <typename T>
constexpr int kVector = 16 / int(sizeof(T));

// Widens the 16-byte vector `raw` of T (4 floats or 8 bf16) to floats, lowest address first.
template <typename T>
__device__ __forceinline__ void unpack(const uint4& raw, float (&x)[kVector<T>]) {
  const uint32_t words[4] = {raw.x, raw.y, raw.z, raw.w};
  if constexpr (std::is_same_v<T, float>) {
    for (int k = 0; k < 4; ++k) x[k] = __uint_as_float(words[k]);
  } else {
    // A bf16 is the top half of a float; the lower address holds the low half of each word.
    for (int k = 0; k < 4; ++k) {
      x[2 * k] = __uint_as_float(words[k] << 16);
      x[2 * k + 1] = __uint_as_float(words[k] & 0xffff0000u);
    }
  }
}

// Rounds floats to T and packs them into a 16-byte vector (the inverse of unpack).
template <typename T>
__device__ __forceinline__ uint4 pack(const float (&x)[kVector<T>]) {
  uint32_t words[4];
  if constexpr (std::is_same_v<T, float>) {
    for (int k = 0; k < 4; ++k) words[k] = __float_as_uint(x[k]);
  } else {
    for (int k = 0; k < 4; ++k)
      words[k] = uint32_t(__bfloat16_as_ushort(__float2bfloat16_rn(x[2 * k]))) |
                 (uint32_t(__bfloat16_as_ushort(__float2bfloat16_rn(x[2 * k + 1]))) << 16);
  }
  return make_uint4(words[0], words[1], words[2], words[3]);
}

// One thread's share of a row: the largest logit seen so far and sum exp(x - max) over the values
// seen, rescaled whenever the maximum grows (online softmax). A vector is folded in with one
// rescale, so the row costs one exp per element plus one per vector that raises the maximum.
struct OnlineSoftmax {
  float max = -INFINITY, sum = 0.0f;

  template <int N>
  __device__ __forceinline__ void add(const float (&x)[N]) {
    float vector_max = x[0];
    for (int k = 1; k < N; ++k) vector_max = fmaxf(vector_max, x[k]);
    if (vector_max > max) {
      sum *= expf(max - vector_max);  // exp(-inf) = 0 on the first values
      max = vector_max;
    }
    if (max == -INFINITY) return;  // only -inf so far: exp(-inf - -inf) would be NaN
    for (int k = 0; k < N; ++k) sum += expf(x[k] - max);
  }
  __device__ __forceinline__ void add(float x) {
    const float one[1] = {x};
    add<1>(one);
  }
};

// Which elements of a row are read as 16-byte vectors: a scalar head up to the first aligned
// address, whole vectors, then a scalar tail. Every pass over the row splits it the same way, so
// each element is read and written by the same thread.
template <typename T>
struct RowSplit {
  int64_t head, vectors, tail;  // head elements [0, head), vectors from head, tail [tail, vocab)

  __device__ __forceinline__ RowSplit(const T* row, int64_t vocab) {
    constexpr int64_t N = kVector<T>;
    const int64_t misalignment = int64_t((reinterpret_cast<uintptr_t>(row) / sizeof(T)) % N);
    head = misalignment == 0 ? 0 : min(vocab, N - misalignment);
    vectors = (vocab - head) / N;
    tail = head + vectors * N;
  }
};

template <typename T, typename G>
__global__ void __launch_bounds__(kWideRowThreads)
    cross_entropy_rows_kernel(const T* logits, int64_t ld, const int64_t* targets, float* lse,
                              float* row_loss, G* gradient, float grad_scale, int64_t vocab,
                              int64_t first_row, int64_t* first_bad_row) {
  constexpr int N = kVector<T>;
  __shared__ float scratch[32];
  const int64_t r = blockIdx.x;
  const T* row = logits + r * ld;
  const int64_t target = targets[r];
  const bool valid = target >= 0 && target < vocab;

  // Stage 0: the target's logit, read before stage 3 overwrites the row (the barriers inside the
  // block reductions of stage 2 order the two).
  float target_logit = 0.0f;
  if (threadIdx.x == 0) {
    if (valid) target_logit = to_float(row[target]);
    else atomicMin(reinterpret_cast<long long*>(first_bad_row), static_cast<long long>(first_row + r));
  }

  // Stage 1: this thread's running max and rescaled sum of exponentials.
  const RowSplit<T> split(row, vocab);
  const uint4* body = reinterpret_cast<const uint4*>(row + split.head);
  OnlineSoftmax mine;
  for (int64_t j = threadIdx.x; j < split.head; j += blockDim.x) mine.add(to_float(row[j]));
  for (int64_t i = threadIdx.x; i < split.vectors; i += blockDim.x) {
    float x[N];
    unpack<T>(body[i], x);
    mine.add<N>(x);
  }
  for (int64_t j = split.tail + threadIdx.x; j < vocab; j += blockDim.x) mine.add(to_float(row[j]));

  // Stage 2: row max, every thread's sum rescaled to it, row sum -> log-sum-exp and the loss term.
  const float row_max = block_max(mine.max, scratch);
  const float rescaled = mine.max == -INFINITY ? 0.0f : mine.sum * expf(mine.max - row_max);
  const float row_lse = row_max + logf(block_sum(rescaled, scratch));
  if (threadIdx.x == 0) {
    if (lse) lse[r] = row_lse;
    row_loss[r] = valid ? row_lse - target_logit : 0.0f;
  }
  if (!gradient) return;

  // Stage 3: d_logits = (softmax - one-hot) * grad_scale over the row, into `gradient` (which may
  // be the logits themselves: each element is read and then written by the same thread).
  auto gradient_of = [&](int64_t j, float x) {
    return (expf(x - row_lse) - (j == target ? 1.0f : 0.0f)) * grad_scale;
  };
  G* out = gradient + r * ld;
  const bool vector_stores = reinterpret_cast<uintptr_t>(out + split.head) % (N * sizeof(G)) == 0;
  for (int64_t j = threadIdx.x; j < split.head; j += blockDim.x)
    out[j] = from_float<G>(gradient_of(j, to_float(row[j])));
  for (int64_t i = threadIdx.x; i < split.vectors; i += blockDim.x) {
    float x[N];
    unpack<T>(body[i], x);
    const int64_t first = split.head + i * N;
    for (int k = 0; k < N; ++k) x[k] = gradient_of(first + k, x[k]);
    if (vector_stores) {
      store_floats<G, N>(out + first, x);
    } else {
      for (int k = 0; k < N; ++k) out[first + k] = from_float<G>(x[k]);
    }
  }
  for (int64_t j = split.tail + threadIdx.x; j < vocab; j += blockDim.x)
    out[j] = from_float<G>(gradient_of(j, to_float(row[j])));
}

// Block (r, tile): d_logits[r, j] for j in the tile.
template <typename T>
__global__ void __launch_bounds__(kBackwardThreads)
    cross_entropy_backward_kernel(const T* logits, const int64_t* targets, const float* lse,
                                  const float* d_loss, float* d_logits, int64_t rows,
                                  int64_t vocab) {
  const int64_t r = blockIdx.x;
  const int64_t begin = int64_t(blockIdx.y) * kBackwardTile;
  const int64_t end = min(vocab, begin + kBackwardTile);
  const float scale = d_loss[0] / float(rows);
  const float row_lse = lse[r];
  const int64_t target = targets[r];
  const T* row = logits + r * vocab;
  float* d_row = d_logits + r * vocab;
  for (int64_t j = begin + threadIdx.x; j < end; j += blockDim.x) {
    float d = expf(to_float(row[j]) - row_lse) * scale;
    if (j == target) d -= scale;
    d_row[j] = d;
  }
}

// One block: each thread sums a strided share in double, then a fixed tree adds the shares.
__global__ void __launch_bounds__(kMeanThreads)
    mean_of_rows_kernel(const float* row_loss, int64_t rows, float* loss) {
  __shared__ double partial[kMeanThreads];
  double total = 0.0;
  for (int64_t i = threadIdx.x; i < rows; i += kMeanThreads) total += double(row_loss[i]);
  partial[threadIdx.x] = total;
  __syncthreads();
  for (int stride = kMeanThreads / 2; stride > 0; stride >>= 1) {
    if (int(threadIdx.x) < stride) partial[threadIdx.x] += partial[threadIdx.x + stride];
    __syncthreads();
  }
  if (threadIdx.x == 0) loss[0] = float(partial[0] / double(rows));
}

template <typename T>
__global__ void scale_by_device_scalar_kernel(const T* src, const float* scale, float* dst,
                                              int64_t n) {
  const float factor = scale[0];
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x)
    dst[i] = to_float(src[i]) * factor;
}


unsigned elementwise_blocks(int64_t n) {
  return unsigned(std::min<int64_t>(ceil_div(n, kElementwiseThreads), kElementwiseMaxBlocks));
}

}  // namespace

void cross_entropy_rows(const void* logits, int64_t ld, const int64_t* targets, float* lse,
                        float* row_loss, void* gradient, DType gradient_dtype, float grad_scale,
                        int64_t rows, int64_t vocab, int64_t first_row, int64_t* first_bad_row,
                        DType dtype, cudaStream_t stream) {
  BRAID_CHECK(rows >= 0 && vocab > 0 && ld >= vocab, "cuda cross_entropy_rows: rows ", rows,
              ", vocab ", vocab, ", row stride ", ld);
  BRAID_CHECK(!gradient || gradient_dtype == dtype || gradient_dtype == DType::bf16,
              "cuda cross_entropy_rows: a ", dtype_name(gradient_dtype), " gradient of ", dtype_name(dtype),
              " logits (the gradient is written in the logits' dtype or in bf16)");
  if (rows == 0) return;
  const int threads = vocab >= kWideRowMin ? kWideRowThreads : kNarrowRowThreads;
  dispatch_activation("cross_entropy", dtype, [&]<typename T>() {
    auto launch = [&]<typename G>() {
      cross_entropy_rows_kernel<T, G><<<unsigned(rows), threads, 0, stream>>>(
          static_cast<const T*>(logits), ld, targets, lse, row_loss, static_cast<G*>(gradient), grad_scale,
          vocab, first_row, first_bad_row);
      CUDA_CHECK_LAST_LAUNCH();
    };
    if (gradient && gradient_dtype != dtype) launch.template operator()<__nv_bfloat16>();
    else launch.template operator()<T>();
  });
}

void cross_entropy_backward(const void* logits, const int64_t* targets, const float* lse,
                            const float* d_loss, float* d_logits, int64_t rows, int64_t vocab,
                            DType dtype, cudaStream_t stream) {
  const int64_t tiles = ceil_div(vocab, kBackwardTile);
  BRAID_CHECK(rows >= 0 && vocab > 0 && tiles <= 65535, "cuda cross_entropy_backward: rows ", rows,
              ", vocab ", vocab, " (at most ", 65535 * kBackwardTile, " classes)");
  if (rows == 0) return;
  dispatch_activation("cross_entropy", dtype, [&]<typename T>() {
    cross_entropy_backward_kernel<T><<<dim3(unsigned(rows), unsigned(tiles)), kBackwardThreads, 0,
                                       stream>>>(static_cast<const T*>(logits), targets, lse,
                                                 d_loss, d_logits, rows, vocab);
    CUDA_CHECK_LAST_LAUNCH();
  });
}

void mean_of_rows(const float* row_loss, int64_t rows, float* loss, cudaStream_t stream) {
  BRAID_CHECK(rows > 0, "cuda mean_of_rows: needs at least one row, got ", rows);
  mean_of_rows_kernel<<<1, kMeanThreads, 0, stream>>>(row_loss, rows, loss);
  CUDA_CHECK_LAST_LAUNCH();
}

void scale_by_device_scalar(const void* src, DType src_dtype, const float* scale, float* dst,
                            int64_t n, cudaStream_t stream) {
  if (n == 0) return;
  dispatch_activation("scale_by_device_scalar", src_dtype, [&]<typename T>() {
    scale_by_device_scalar_kernel<T><<<elementwise_blocks(n), kElementwiseThreads, 0, stream>>>(
        static_cast<const T*>(src), scale, dst, n);
    CUDA_CHECK_LAST_LAUNCH();
  });
}

}  // namespace braid::kernels::cuda
