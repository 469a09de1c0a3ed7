// Bandwidth of the small memory-bound kernels at the 1B presets' shapes (one 8K row, bf16
// activations, f32 parameters and parameter gradients): the causal depthwise conv1d + SiLU of the
// Mamba layers (forward; backward on bf16 gradients, with its weight/bias reduction), RoPE on the
// query and key heads (forward on bf16; backward on f32 gradients), and the embedding gather and
// its table gradient.
// Prints one JSON object per line: bench, shape, ms, gbps (bytes the kernel must move: each input
// read once, each output written once, over the time).
#include <cuda_runtime.h>

#include <cstdio>
#include <functional>
#include <string>
#include <vector>

#include "kernels/cuda/conv1d.h"
#include "kernels/cuda/embedding.h"
#include "kernels/cuda/rope.h"
#include "layers/ops/rope.h"
#include "runtime/cuda_check.h"
#include "runtime/rng.h"
#include "tools/bench_timer.h"

namespace {

using braid::bench::time_ms;

using namespace braid;

void report(const char* card, const std::string& bench, const std::string& shape, double ms,
            double bytes) {
  std::printf(
      "{\"engine\": \"braid\", \"card\": \"%s\", \"bench\": \"%s\", \"shape\": \"%s\", "
      "\"ms\": %.4f, \"gbps\": %.1f}\n",
      card, bench.c_str(), shape.c_str(), ms, bytes / (ms * 1e-3) / 1e9);
  std::fflush(stdout);
}

Tensor normal(const Shape& shape, DType dtype, uint64_t seed, double stddev = 1.0) {
  Tensor tensor = Tensor::empty(shape, dtype, Device::cuda(0));
  fill_normal(tensor, seed, 0, 0.0, stddev);
  return tensor;
}

struct ConvShape {
  const char* name;
  int64_t batch, length, channels, width;
};

struct RopeShape {
  const char* name;
  int64_t batch, length, heads, head_dim;
};

struct EmbeddingShape {
  const char* name;
  int64_t tokens, vocab, dim;
};

// The 1B Mamba conv: d_ssm + 2 G N = 4096 + 256; the 1B intra-hybrid's: 2304 + 256.
const ConvShape kConvShapes[] = {
    {"1b mamba B1 T8192 C4352 W4", 1, 8192, 4352, 4},
    {"1b intra-hybrid B1 T8192 C2560 W4", 1, 8192, 2560, 4},
};

// The 1B Transformer: 32 query / 8 key heads of 64; the intra-hybrid: 16 / 4 heads of 72.
const RopeShape kRopeShapes[] = {
    {"1b llama q B1 T8192 H32 D64", 1, 8192, 32, 64},
    {"1b llama k B1 T8192 H8 D64", 1, 8192, 8, 64},
    {"1b intra-hybrid q B1 T8192 H16 D72", 1, 8192, 16, 72},
};

const EmbeddingShape kEmbeddingShapes[] = {
    {"1b n8192 V128256 d2048", 8192, 128256, 2048},
};

}  // namespace

int main() {
  try {
    BRAID_CHECK(cuda_available(), "bench_conv needs a CUDA device");
    cudaDeviceProp properties{};
    CUDA_CHECK(cudaGetDeviceProperties(&properties, 0));
    const char* card = properties.name;
    const cudaStream_t stream = nullptr;

    for (const ConvShape& s : kConvShapes) {
      const Shape activations = {s.batch, s.length, s.channels};
      const double elements = double(s.batch * s.length * s.channels);
      Tensor x = normal(activations, DType::bf16, 1);
      Tensor weight = normal({s.channels, s.width}, DType::f32, 2, 0.5);
      Tensor bias = normal({s.channels}, DType::f32, 3);
      Tensor out = Tensor::empty(activations, DType::bf16, Device::cuda(0));
      Tensor final_state = Tensor::empty({s.batch, s.channels, s.width - 1}, DType::bf16,
                                         Device::cuda(0));
      const double forward_ms = time_ms([&] {
        kernels::cuda::causal_conv1d_forward(x.raw_data(), weight.data<float>(),
                                             bias.data<float>(), nullptr, out.raw_data(),
                                             final_state.raw_data(), s.batch, s.length,
                                             s.channels, s.width, true, DType::bf16, stream);
      });
      report(card, "conv1d_silu forward bf16", s.name, forward_ms, elements * (2 + 2));

      Tensor d_out = normal(activations, DType::bf16, 4);
      Tensor d_x = Tensor::empty(activations, DType::bf16, Device::cuda(0));
      Tensor d_weight = Tensor::empty({s.channels, s.width}, DType::f32, Device::cuda(0));
      Tensor d_bias = Tensor::empty({s.channels}, DType::f32, Device::cuda(0));
      Tensor workspace = Tensor::empty(
          {int64_t(kernels::cuda::causal_conv1d_backward_workspace_floats(s.batch, s.length,
                                                                           s.channels, s.width))},
          DType::f32, Device::cuda(0));
      const double backward_ms = time_ms([&] {
        kernels::cuda::causal_conv1d_backward(
            x.raw_data(), weight.data<float>(), bias.data<float>(), nullptr, d_out.raw_data(),
            nullptr, d_x.raw_data(), d_weight.data<float>(), d_bias.data<float>(), nullptr,
            workspace.data<float>(), s.batch, s.length, s.channels, s.width, true, DType::bf16,
            stream);
      });
      // x and d_out read, d_x written (bf16).
      report(card, "conv1d_silu backward bf16", s.name, backward_ms, elements * (2 + 2 + 2));
    }

    for (const RopeShape& s : kRopeShapes) {
      const Shape shape = {s.batch, s.length, s.heads, s.head_dim};
      const double elements = double(s.batch * s.length * s.heads * s.head_dim);
      const std::vector<double> frequencies = ops::rope_inverse_frequencies({}, s.head_dim);
      Tensor x = normal(shape, DType::bf16, 5);
      Tensor out = Tensor::empty(shape, DType::bf16, Device::cuda(0));
      const double forward_ms = time_ms([&] {
        kernels::cuda::rope_forward(x.raw_data(), out.raw_data(), frequencies.data(), s.batch,
                                    s.length, s.heads, s.head_dim, 0, DType::bf16, stream);
      });
      report(card, "rope forward bf16", s.name, forward_ms, elements * (2 + 2));
      Tensor d_out = normal(shape, DType::f32, 6);
      Tensor d_x = Tensor::empty(shape, DType::f32, Device::cuda(0));
      const double backward_ms = time_ms([&] {
        kernels::cuda::rope_backward(d_out.data<float>(), d_x.data<float>(), frequencies.data(),
                                     s.batch, s.length, s.heads, s.head_dim, 0, stream);
      });
      report(card, "rope backward f32 grads", s.name, backward_ms, elements * (4 + 4));
    }

    for (const EmbeddingShape& s : kEmbeddingShapes) {
      Tensor table = normal({s.vocab, s.dim}, DType::f32, 7, 0.02);
      // Uniform ids (a real token distribution has longer runs for frequent tokens).
      Tensor uniform = Tensor::empty({s.tokens}, DType::f32, Device::cuda(0));
      fill_uniform(uniform, 8, 0, 0.0, double(s.vocab - 1));
      Tensor ids = uniform.to(DType::i64);
      Tensor out = Tensor::empty({s.tokens, s.dim}, DType::f32, Device::cuda(0));
      const double rows = double(s.tokens * s.dim);
      const double forward_ms = time_ms([&] {
        kernels::cuda::embedding_forward(table.data<float>(), ids.data<int64_t>(), out.raw_data(),
                                         s.tokens, s.dim, DType::f32, stream);
      });
      report(card, "embedding forward f32", s.name, forward_ms, rows * (4 + 4));
      Tensor d_out = normal({s.tokens, s.dim}, DType::f32, 9);
      Tensor d_table = Tensor::empty({s.vocab, s.dim}, DType::f32, Device::cuda(0));
      Tensor workspace = Tensor::empty(
          {int64_t(kernels::cuda::embedding_backward_workspace_floats(s.tokens, s.vocab))},
          DType::f32, Device::cuda(0));
      const double backward_ms = time_ms(
          [&] {
            kernels::cuda::embedding_backward(ids.data<int64_t>(), d_out.data<float>(),
                                              d_table.data<float>(), workspace.data<float>(),
                                              s.tokens, s.vocab, s.dim, stream);
          },
          5);
      // d_out read, the whole d_table written.
      report(card, "embedding backward f32", s.name, backward_ms,
             rows * 4 + double(s.vocab * s.dim) * 4);
    }
    return 0;
  } catch (const Error& error) {
    std::fprintf(stderr, "error: %s\n", error.message().c_str());
    return 1;
  }
}
