// Timing shared by the GPU benchmarks (tools/bench_*_main.cpp): CUDA events around repeated calls.
#pragma once

#include <cuda_runtime.h>

#include <functional>

#include "runtime/cuda_check.h"

namespace braid::bench {

// Mean milliseconds per call of `run` over `repeats` calls on the default stream, after `warmup`
// untimed calls (which also build GEMM plans and fill the allocator's free lists).
inline double time_ms(const std::function<void()>& run, int repeats = 20, int warmup = 3) {
  for (int i = 0; i < warmup; ++i) run();
  CUDA_CHECK(cudaDeviceSynchronize());
  cudaEvent_t start, stop;
  CUDA_CHECK(cudaEventCreate(&start));
  CUDA_CHECK(cudaEventCreate(&stop));
  CUDA_CHECK(cudaEventRecord(start));
  for (int i = 0; i < repeats; ++i) run();
  CUDA_CHECK(cudaEventRecord(stop));
  CUDA_CHECK(cudaEventSynchronize(stop));
  float milliseconds = 0;
  CUDA_CHECK(cudaEventElapsedTime(&milliseconds, start, stop));
  CUDA_CHECK(cudaEventDestroy(start));
  CUDA_CHECK(cudaEventDestroy(stop));
  return double(milliseconds) / repeats;
}

}  // namespace braid::bench
