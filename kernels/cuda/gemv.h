// y = x Wᵀ for a few rows of x: the products of a decode step (one token per sequence of the batch),
// where each call reads a whole weight matrix to produce a handful of outputs. Bandwidth is all that
// matters; see gemv.cu for how the matrix is streamed. A deliberate departure from "cuBLASLt for
// GEMMs" (DESIGN.md): cuBLASLt's few-row kernels add split-K reduction launches and cannot start
// loading weights before the kernel ahead of them ends (BENCHMARKS.md, Inference).
//
// x (rows, K) with row stride ldx, W (N, K) contiguous, y (rows, N) with row stride ldy, all bf16;
// fp32 accumulation. Launched as a programmatic dependent launch (launch.h): with
// `weight_is_constant` the kernel starts loading W before the kernel ahead of it has finished, so W
// must not be written by that kernel (true of a model's weights during inference); without it the
// kernel waits first.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <span>

namespace braid::kernels::cuda {

constexpr int64_t kGemvMaxRows = 8;
constexpr int kGemvMaxProducts = 4;

// One product of a gemv() call: y (rows, n) with row stride ldy = x Wᵀ, W (n, K) contiguous.
struct GemvProduct {
  const void* w;
  int64_t n;
  void* y;
  int64_t ldy;
};

// Whether gemv() serves these sizes and pointers: 1..kGemvMaxRows rows, K a multiple of 32, x and
// every W 16-byte aligned, x's rows whole 16-byte words apart, 1..kGemvMaxProducts products.
bool gemv_supports(int64_t rows, int64_t K, const void* x, int64_t ldx, std::span<const GemvProduct> products);

// What the kernel does with the products: writes each (none), or, for a gate and an up product of
// equal width, writes SiLU(gate) * up into the gate product's y (swiglu; gate and up are rounded to
// bf16 first, so the result equals the products followed by the SwiGLU kernel).
enum class GemvEpilogue { none, swiglu };

// Every product of the same x in one launch (the gate and up projections of an FFN, say): the
// weights stream one after another as if they were one matrix.
void gemv(int64_t rows, int64_t K, const void* x, int64_t ldx, std::span<const GemvProduct> products,
          bool weight_is_constant, cudaStream_t stream, GemvEpilogue epilogue = GemvEpilogue::none);

}  // namespace braid::kernels::cuda
