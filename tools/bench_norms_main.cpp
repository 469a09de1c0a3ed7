// `make bench` (norm part): times the memory-bound norm and gate kernels at the 1B presets' training
// shapes (8192 tokens, bf16 activations and their gradients, f32 parameters and theirs) and prints
// one JSON object per kernel with its effective bandwidth: bytes the op must read and write
// (inputs, outputs, parameters, statistics; not its scratch) over the time. A timed 1 GiB
// device-to-device copy, printed first as {"bench": "copy"}, is the card's practical peak they
// compare against ("of_copy").
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdio>
#include <functional>
#include <string>

#include "kernels/cuda/gated_rmsnorm.h"
#include "kernels/cuda/rmsnorm.h"
#include "kernels/cuda/swiglu.h"
#include "runtime/cuda_check.h"
#include "runtime/rng.h"
#include "runtime/tensor.h"
#include "tools/bench_timer.h"

namespace {

using braid::bench::time_ms;

using namespace braid;

double report(const char* card, const char* bench, const std::string& shape, double ms,
              double bytes, double copy_gbps) {
  const double gbps = bytes / (ms * 1e-3) / 1e9;
  std::printf("{\"bench\": \"%s\", \"card\": \"%s\", \"shape\": \"%s\", \"ms\": %.4f, \"gbps\": %.1f",
              bench, card, shape.c_str(), ms, gbps);
  if (copy_gbps > 0) std::printf(", \"of_copy\": %.3f", gbps / copy_gbps);
  std::printf("}\n");
  std::fflush(stdout);
  return gbps;
}

Tensor normal(const Shape& shape, DType dtype, uint64_t seed) {
  Tensor tensor = Tensor::empty(shape, dtype, Device::cuda(0));
  fill_normal(tensor, seed, 0);
  return tensor;
}

Tensor empty(const Shape& shape, DType dtype) { return Tensor::empty(shape, dtype, Device::cuda(0)); }

}  // namespace

int main() {
  try {
    BRAID_CHECK(cuda_available(), "bench_norms needs a CUDA device");
    cudaDeviceProp properties{};
    CUDA_CHECK(cudaGetDeviceProperties(&properties, 0));
    const char* card = properties.name;
    cudaStream_t stream = nullptr;

    // The reference: a 1 GiB device-to-device copy reads and writes 1 GiB each.
    double copy_gbps = 0;
    {
      const size_t bytes = size_t(1) << 30;
      Tensor source = empty({int64_t(bytes / 4)}, DType::f32), target = empty({int64_t(bytes / 4)}, DType::f32);
      CUDA_CHECK(cudaMemset(source.raw_data(), 1, bytes));
      const double ms = time_ms([&] {
        CUDA_CHECK(cudaMemcpyAsync(target.raw_data(), source.raw_data(), bytes,
                                   cudaMemcpyDeviceToDevice, stream));
      });
      copy_gbps = report(card, "copy", "1 GiB", ms, 2.0 * double(bytes), 0);
    }

    const DType bf16 = DType::bf16, f32 = DType::f32;
    {
      const int64_t rows = 8192, dim = 2048;
      const double n = double(rows * dim), stats = double(rows) * 4, params = double(dim) * 4;
      const std::string shape = "8192x2048 bf16";
      Tensor x = normal({rows, dim}, bf16, 1), residual = normal({rows, dim}, bf16, 2);
      Tensor weight = normal({dim}, f32, 3), d_out = normal({rows, dim}, bf16, 4);
      Tensor d_direct = normal({rows, dim}, bf16, 5);
      Tensor y = empty({rows, dim}, bf16), sum = empty({rows, dim}, bf16), rstd = empty({rows}, f32);
      Tensor d_x = empty({rows, dim}, bf16), d_z = empty({rows, dim}, bf16);
      Tensor d_weight = empty({dim}, f32);
      const size_t workspace_floats =
          std::max(kernels::cuda::rmsnorm_workspace_floats(rows, dim, bf16),
                   kernels::cuda::gated_rmsnorm_workspace_floats(rows, 1, dim, bf16));
      Tensor workspace = empty({int64_t(workspace_floats)}, f32);
      const float eps = 1e-5f;

      // rmsnorm: read x, write y; backward: read x, d_y, write d_x (all bf16) and d_weight (f32).
      double ms = time_ms([&] {
        kernels::cuda::rmsnorm_forward(x.raw_data(), weight.data<float>(), y.raw_data(),
                                       rstd.data<float>(), rows, dim, eps, bf16, stream);
      });
      report(card, "rmsnorm_fwd", shape, ms, n * (2 + 2) + params + stats, copy_gbps);
      ms = time_ms([&] {
        kernels::cuda::rmsnorm_backward(x.raw_data(), weight.data<float>(), rstd.data<float>(),
                                        d_out.raw_data(), nullptr, d_x.raw_data(),
                                        d_weight.data<float>(), rows, dim, bf16,
                                        workspace.data<float>(), stream);
      });
      report(card, "rmsnorm_bwd", shape, ms, n * (2 + 2 + 2) + 2 * params + stats, copy_gbps);

      // add_rmsnorm: read x, residual, write sum, y; backward adds the read of d_sum.
      ms = time_ms([&] {
        kernels::cuda::add_rmsnorm_forward(x.raw_data(), residual.raw_data(), weight.data<float>(),
                                           sum.raw_data(), y.raw_data(), rstd.data<float>(), rows,
                                           dim, eps, bf16, stream);
      });
      report(card, "add_rmsnorm_fwd", shape, ms, n * (2 + 2 + 2 + 2) + params + stats, copy_gbps);
      ms = time_ms([&] {
        kernels::cuda::rmsnorm_backward(sum.raw_data(), weight.data<float>(), rstd.data<float>(),
                                        d_out.raw_data(), d_direct.raw_data(), d_x.raw_data(),
                                        d_weight.data<float>(), rows, dim, bf16,
                                        workspace.data<float>(), stream);
      });
      report(card, "add_rmsnorm_bwd", shape, ms, n * (2 + 2 + 2 + 2) + 2 * params + stats,
             copy_gbps);

      // gated_rmsnorm, one group: read y, z, write out; backward: read y, z, d_out, write d_y, d_z.
      ms = time_ms([&] {
        kernels::cuda::gated_rmsnorm_forward(x.raw_data(), residual.raw_data(), weight.data<float>(),
                                             y.raw_data(), rstd.data<float>(), rows, 1, dim, eps,
                                             bf16, stream);
      });
      report(card, "gated_rmsnorm_fwd", shape, ms, n * (2 + 2 + 2) + params + stats, copy_gbps);
      ms = time_ms([&] {
        kernels::cuda::gated_rmsnorm_backward(x.raw_data(), residual.raw_data(), weight.data<float>(),
                                              rstd.data<float>(), d_out.raw_data(), d_x.raw_data(),
                                              d_z.raw_data(), d_weight.data<float>(), rows, 1, dim,
                                              bf16, workspace.data<float>(), stream);
      });
      report(card, "gated_rmsnorm_bwd", shape, ms, n * (2 + 2 + 2 + 2 + 2) + 2 * params + stats,
             copy_gbps);
    }

    // swiglu: read gate, up, write out; backward: read gate, up, d_out, write d_gate, d_up (all
    // bf16).
    for (const int64_t width : {int64_t(2048), int64_t(8192)}) {
      const int64_t rows = 8192, count = rows * width;
      const double n = double(count);
      const std::string shape = "8192x" + std::to_string(width) + " bf16";
      Tensor gate = normal({count}, bf16, 10), up = normal({count}, bf16, 11);
      Tensor d_out = normal({count}, bf16, 12);
      Tensor out = empty({count}, bf16), d_gate = empty({count}, bf16), d_up = empty({count}, bf16);
      double ms = time_ms([&] {
        kernels::cuda::swiglu_forward(gate.raw_data(), up.raw_data(), out.raw_data(), count, bf16,
                                      stream);
      });
      report(card, "swiglu_fwd", shape, ms, n * (2 + 2 + 2), copy_gbps);
      ms = time_ms([&] {
        kernels::cuda::swiglu_backward(gate.raw_data(), up.raw_data(), d_out.raw_data(),
                                       d_gate.raw_data(), d_up.raw_data(), count, bf16, stream);
      });
      report(card, "swiglu_bwd", shape, ms, n * (2 + 2 + 2 + 2 + 2), copy_gbps);
    }
    CUDA_CHECK(cudaDeviceSynchronize());
    return 0;
  } catch (const Error& error) {
    std::fprintf(stderr, "error: %s\n", error.message().c_str());
    return 1;
  }
}
