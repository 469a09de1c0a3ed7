// Softmax cross-entropy on CUDA (MODEL.md section 1: loss = mean cross-entropy), the twin of
// kernels/cpu/cross_entropy.h, plus the small helpers of the LM head's fused loss
// (layers/ops/cross_entropy.h, lm_head_cross_entropy). Logits are f32 or bf16; statistics, losses
// and gradients of ops::cross_entropy are f32. Row kernel: one block per row; one pass keeps each
// thread's running max and rescaled sum of exponentials (16-byte vector loads), block reductions
// (kernels/cuda/common.cuh) combine them, and a second pass writes the gradient in place.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "runtime/dtype.h"

namespace braid::kernels::cuda {

// Per row r of logits (rows, vocab), stored with row stride ld >= vocab, in `dtype`:
//   lse[r]      = log sum_j exp(logits[r, j])        (f32; skipped when lse is null)
//   row_loss[r] = lse[r] - logits[r, t_r]            (f32)
// and, when `gradient` is given (same row stride, in `dtype` or bf16; it may be the logits
// themselves, overwritten in place), each row's gradient
//   gradient[r, j] = (softmax(logits[r])[j] - [j == t_r]) * grad_scale.
// Columns vocab..ld are never touched. A target outside [0, vocab) gives row_loss 0 and no one-hot
// term, and lowers *first_bad_row (device i64) to first_row + r with atomicMin, where first_row
// is the index of these rows among all the caller's rows (chunked calls): the caller sets the flag
// to a value past its rows before the first launch and reads it back after the last one. (The CPU
// twin writes the gradient in place only; the bf16 output here saves the LM head a rounding pass.)
void cross_entropy_rows(const void* logits, int64_t ld, const int64_t* targets, float* lse,
                        float* row_loss, void* gradient, DType gradient_dtype, float grad_scale,
                        int64_t rows, int64_t vocab, int64_t first_row, int64_t* first_bad_row,
                        DType dtype, cudaStream_t stream);

// d_logits (rows, vocab) f32, contiguous, written fresh:
//   d_logits[r, j] = (exp(logits[r, j] - lse[r]) - [j == t_r]) * d_loss[0] / rows,
// with logits contiguous in `dtype`, targets in range, and d_loss a device f32 scalar (the seed of
// the mean loss's gradient, read on the device so the backward never waits for the host).
void cross_entropy_backward(const void* logits, const int64_t* targets, const float* lse,
                            const float* d_loss, float* d_logits, int64_t rows, int64_t vocab,
                            DType dtype, cudaStream_t stream);

// loss[0] = (sum of row_loss[0..rows) in double, in a fixed order) / rows, rounded to f32.
void mean_of_rows(const float* row_loss, int64_t rows, float* loss, cudaStream_t stream);

// dst[i] = float(src[i]) * scale[0], src in src_dtype (f32 or bf16), scale a device f32 scalar;
// dst may be src itself when src is f32.
void scale_by_device_scalar(const void* src, DType src_dtype, const float* scale, float* dst,
                            int64_t n, cudaStream_t stream);

}  // namespace braid::kernels::cuda
