// `make bench` (GEMM part): times the cuBLASLt GEMM behind ops::linear at the 1B presets' training
// shapes (y = x Wᵀ, bf16 in and out, fp32 accumulation), and prints one JSON object per shape.
// tools/bench_gemm_torch.py times the same shapes with torch.matmul on the same card as the peer.
#include <cuda_runtime.h>

#include <cstdio>
#include <vector>

#include "kernels/cuda/gemm.h"
#include "runtime/cuda_check.h"
#include "runtime/rng.h"
#include "tools/bench_timer.h"

namespace {

struct BenchShape {
  const char* name;
  int64_t tokens, in_features, out_features;
};

// 8192 tokens (one 8K row) through the 1B presets' projections (MODEL.md section 6).
const BenchShape kShapes[] = {
    {"square 8192", 8192, 8192, 8192},
    {"1b mamba in_proj", 8192, 2048, 8480},
    {"1b mamba out_proj", 8192, 4096, 2048},
    {"1b ffn gate/up", 8192, 2048, 8192},
    {"1b ffn down", 8192, 8192, 2048},
    {"1b attention qkv", 8192, 2048, 3072},
};

}  // namespace

int main() {
  using namespace braid;
  try {
    BRAID_CHECK(cuda_available(), "bench_gemm needs a CUDA device");
    cudaDeviceProp properties{};
    CUDA_CHECK(cudaGetDeviceProperties(&properties, 0));
    for (const BenchShape& shape : kShapes) {
      Tensor x = Tensor::empty({shape.tokens, shape.in_features}, DType::bf16, Device::cuda(0));
      Tensor w = Tensor::empty({shape.out_features, shape.in_features}, DType::bf16, Device::cuda(0));
      Tensor y = Tensor::empty({shape.tokens, shape.out_features}, DType::bf16, Device::cuda(0));
      fill_normal(x, 1, 0);
      fill_normal(w, 2, 0);
      auto run = [&] {
        kernels::cuda::gemm(false, true, shape.tokens, shape.out_features, shape.in_features, 1.0f, x.raw_data(),
                            shape.in_features, w.raw_data(), shape.in_features, 0.0f, y.raw_data(),
                            shape.out_features, DType::bf16);
      };
      const double seconds = bench::time_ms(run, /*repeats=*/50, /*warmup=*/5) / 1e3;
      const double flops = 2.0 * double(shape.tokens) * double(shape.in_features) * double(shape.out_features);
      std::printf("{\"engine\": \"braid cuBLASLt\", \"card\": \"%s\", \"shape\": \"%s\", \"M\": %ld, \"N\": %ld, "
                  "\"K\": %ld, \"ms\": %.4f, \"tflops\": %.1f}\n",
                  properties.name, shape.name, long(shape.tokens), long(shape.out_features),
                  long(shape.in_features), seconds * 1e3, flops / seconds / 1e12);
    }
    return 0;
  } catch (const Error& error) {
    std::fprintf(stderr, "error: %s\n", error.message().c_str());
    return 1;
  }
}
