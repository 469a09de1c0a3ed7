// The few-row product (kernels/cuda/gemv.h) against the CPU GEMM on the same bf16 values, its
// programmatic-dependent-launch contract (a constant weight is read early, x only after the kernel
// before has finished), and ops::linear's routing of few-row bf16 products to it.
#include <cuda_bf16.h>

#include <cmath>
#include <limits>
#include <vector>

#include "kernels/cpu/gemm.h"
#include "kernels/cuda/gemv.h"
#include "kernels/cuda/launch.h"
#include "layers/ops/matmul.h"
#include "layers/ops/swiglu.h"
#include "tests/cuda/cuda_test_util.h"
#include "tests/test_util.h"

namespace braid {
namespace {

using CudaGemv = testing::CudaTest;

struct GemvCase {
  int64_t rows, N, K;
  int64_t x_pad, y_pad;  // extra elements at the end of every row of x (a multiple of 8) and of y
};

// y = x Wᵀ on the device against the CPU gemm in f32 on the same bf16 values: |got - want| <=
// 2^-8 * sum_k |x_ik w_jk| (bf16 rounding of the result; fp32 sums on both sides). y starts as NaN
// (fresh storage is poisoned), so an element left unwritten fails; its padding must stay NaN.
void check_gemv(const GemvCase& c, bool weight_is_constant, uint64_t seed) {
  const int64_t ldx = c.K + c.x_pad, ldy = c.N + c.y_pad;
  const Tensor x = testing::random_normal({c.rows, ldx}, seed, DType::bf16);
  const Tensor w = testing::random_normal({c.N, c.K}, seed + 1, DType::bf16, 0.3);
  const Tensor x_device = x.to(Device::cuda(0)), w_device = w.to(Device::cuda(0));
  const Tensor y_device = Tensor::empty({c.rows, ldy}, DType::bf16, Device::cuda(0));
  const kernels::cuda::GemvProduct product{w_device.raw_data(), c.N, y_device.raw_data(), ldy};
  kernels::cuda::gemv(c.rows, c.K, x_device.raw_data(), ldx, {&product, 1}, weight_is_constant, nullptr);
  CUDA_CHECK(cudaDeviceSynchronize());
  const std::vector<double> got = y_device.to_doubles();

  const Tensor x_host = x.to(DType::f32), w_host = w.to(DType::f32);
  Tensor want = Tensor::zeros({c.rows, c.N}, DType::f32);
  kernels::cpu::gemm<float>(false, true, c.rows, c.N, c.K, 1.0f, x_host.data<float>(), ldx, w_host.data<float>(),
                            c.K, 0.0f, want.data<float>(), c.N);
  const std::vector<double> expected = want.to_doubles(), xv = x_host.to_doubles(), wv = w_host.to_doubles();
  for (int64_t i = 0; i < c.rows; ++i) {
    for (int64_t j = 0; j < c.N; ++j) {
      double terms = 0;
      for (int64_t k = 0; k < c.K; ++k) terms += std::abs(xv[i * ldx + k] * wv[j * c.K + k]);
      const double value = got[i * ldy + j];
      ASSERT_TRUE(std::abs(value - expected[i * c.N + j]) <= 0x1p-8 * terms)
          << "y[" << i << ", " << j << "] = " << value << ", expected " << expected[i * c.N + j] << " (terms "
          << terms << ") for rows " << c.rows << ", N " << c.N << ", K " << c.K;
    }
    for (int64_t j = c.N; j < ldy; ++j) ASSERT_TRUE(std::isnan(got[i * ldy + j])) << "padding y[" << i << ", " << j << "]";
  }
}

TEST_F(CudaGemv, MatchesTheCpuGemmOverShapesAndStrides) {
  // Partial groups of 8 rows (N), a last column chunk narrower than 1024 (K), every row count,
  // more groups than SMs (N 16400), more than one wave of CTAs (N 140000), padded strides.
  const GemvCase cases[] = {{1, 8, 32, 0, 0},       {4, 300, 2304, 8, 8},  {3, 37, 96, 0, 3},
                            {8, 1030, 1056, 16, 2}, {4, 2048, 8192, 0, 0}, {5, 129, 1024, 8, 7},
                            {2, 16400, 128, 0, 0},  {7, 9, 3104, 24, 0},   {6, 64, 64, 8, 8},
                            {2, 140000, 64, 0, 0}};
  uint64_t seed = 700;
  for (const GemvCase& c : cases) {
    for (bool weight_is_constant : {false, true}) {
      SCOPED_TRACE(::testing::Message() << "weight_is_constant " << weight_is_constant);
      check_gemv(c, weight_is_constant, seed);
      seed += 2;
    }
  }
}

TEST_F(CudaGemv, SeveralProductsOfOneXInOneLaunch) {
  // Three weights of 72, 300 and 9 rows (partial groups at each boundary): each y against the CPU.
  const int64_t rows = 4, K = 2304, ldx = K + 8;
  const int64_t widths[] = {72, 300, 9};
  const Tensor x = testing::random_normal({rows, ldx}, 750, DType::bf16);
  const Tensor x_device = x.to(Device::cuda(0));
  std::vector<Tensor> weights, outputs;
  std::vector<kernels::cuda::GemvProduct> products;
  for (int p = 0; p < 3; ++p) {
    weights.push_back(testing::random_normal({widths[p], K}, 751 + p, DType::bf16, 0.3));
    const Tensor w_device = weights.back().to(Device::cuda(0));
    outputs.push_back(Tensor::empty({rows, widths[p] + 3}, DType::bf16, Device::cuda(0)));
    products.push_back({w_device.raw_data(), widths[p], outputs.back().raw_data(), widths[p] + 3});
    weights.back() = w_device;  // keep the device copy alive
  }
  kernels::cuda::gemv(rows, K, x_device.raw_data(), ldx, products, true, nullptr);
  CUDA_CHECK(cudaDeviceSynchronize());
  const Tensor x_host = x.to(DType::f32);
  for (int p = 0; p < 3; ++p) {
    const Tensor w_host = weights[p].to(Device::cpu()).to(DType::f32);
    Tensor want = Tensor::zeros({rows, widths[p]}, DType::f32);
    kernels::cpu::gemm<float>(false, true, rows, widths[p], K, 1.0f, x_host.data<float>(), ldx, w_host.data<float>(), K,
                              0.0f, want.data<float>(), widths[p]);
    const std::vector<double> got = outputs[p].to_doubles(), expected = want.to_doubles();
    for (int64_t i = 0; i < rows; ++i) {
      for (int64_t j = 0; j < widths[p]; ++j)
        ASSERT_NEAR(got[i * (widths[p] + 3) + j], expected[i * widths[p] + j], 0x1p-8 * 0.3 * K)
            << "product " << p << ", y[" << i << ", " << j << "]";
      for (int64_t j = widths[p]; j < widths[p] + 3; ++j) ASSERT_TRUE(std::isnan(got[i * (widths[p] + 3) + j]));
    }
  }
}

TEST_F(CudaGemv, SupportsOnlyWholeWordsAndFewRows) {
  const Tensor buffer = Tensor::empty({4096}, DType::bf16, Device::cuda(0));
  char* base = static_cast<char*>(buffer.raw_data());
  auto supports = [&](int64_t rows, int64_t K, const char* x, int64_t ldx, const char* w, int count = 1) {
    const std::vector<kernels::cuda::GemvProduct> products(size_t(count), {w, 100, base, 104});
    return kernels::cuda::gemv_supports(rows, K, x, ldx, products);
  };
  EXPECT_TRUE(supports(4, 64, base, 64, base));
  EXPECT_TRUE(supports(4, 64, base, 64, base, int(kernels::cuda::kGemvMaxProducts)));
  EXPECT_FALSE(supports(4, 64, base, 64, base, int(kernels::cuda::kGemvMaxProducts) + 1));
  EXPECT_FALSE(supports(4, 64, base, 64, base, 0));
  EXPECT_FALSE(supports(9, 64, base, 64, base));       // too many rows
  EXPECT_FALSE(supports(0, 64, base, 64, base));
  EXPECT_FALSE(supports(4, 48, base, 48, base));       // K not a multiple of 32
  EXPECT_FALSE(supports(4, 64, base, 68, base));       // x rows not whole words
  EXPECT_FALSE(supports(4, 64, base + 2, 64, base));   // misaligned x
  EXPECT_FALSE(supports(4, 64, base, 64, base + 8));   // misaligned W
}

// Spins for `cycles`, then copies `source` into `x`: a slow kernel that writes a product's input
// last, after allowing its dependents to launch at once.
__global__ void slow_copy_kernel(const __nv_bfloat16* source, __nv_bfloat16* x, int64_t n, long long cycles) {
  kernels::cuda::allow_dependent_launch();
  const long long start = clock64();
  while (clock64() - start < cycles) {
  }
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x) x[i] = source[i];
}

TEST_F(CudaGemv, AConstantWeightStillWaitsForItsInput) {
  // The product starts while the kernel before it spins (about 100 us), loads W, and must still
  // read x only once that kernel has written it: the result is the product with the new x.
  const int64_t rows = 4, N = 2048, K = 2048;
  const Tensor stale = testing::random_normal({rows, K}, 800, DType::bf16).to(Device::cuda(0));
  const Tensor fresh = testing::random_normal({rows, K}, 801, DType::bf16);
  const Tensor fresh_device = fresh.to(Device::cuda(0));
  const Tensor w = testing::random_normal({N, K}, 802, DType::bf16, 0.3);
  const Tensor w_device = w.to(Device::cuda(0));
  const Tensor y = Tensor::empty({rows, N}, DType::bf16, Device::cuda(0));
  CUDA_CHECK(cudaDeviceSynchronize());
  slow_copy_kernel<<<1, 256>>>(static_cast<const __nv_bfloat16*>(fresh_device.raw_data()),
                               static_cast<__nv_bfloat16*>(stale.raw_data()), rows * K, 200000);
  CUDA_CHECK_LAST_LAUNCH();
  const kernels::cuda::GemvProduct product{w_device.raw_data(), N, y.raw_data(), N};
  kernels::cuda::gemv(rows, K, stale.raw_data(), K, {&product, 1}, true, nullptr);
  CUDA_CHECK(cudaDeviceSynchronize());

  const Tensor x_host = fresh.to(DType::f32), w_host = w.to(DType::f32);
  Tensor want = Tensor::zeros({rows, N}, DType::f32);
  kernels::cpu::gemm<float>(false, true, rows, N, K, 1.0f, x_host.data<float>(), K, w_host.data<float>(), K, 0.0f,
                            want.data<float>(), N);
  // Every |x w| term is O(0.3); 2048 of them: 2^-8 of their sum bounds the bf16 rounding.
  EXPECT_TRUE(testing::all_close(y.to_doubles(), want.to_doubles(), 0x1p-8, 0.5));
}

TEST_F(CudaGemv, LinearRoutesFewBf16RowsThroughItWithGradients) {
  // Six rows: ops::linear takes the few-row product forward (both a bf16 weight used as stored and
  // an fp32 master weight converted on the way); backward stays on cuBLASLt. Against the CPU in
  // f32 on the same values.
  const Tensor x = testing::random_normal({2, 3, 256}, 810, DType::bf16);
  const Tensor w = testing::random_normal({72, 256}, 811, DType::bf16, 0.2);
  const Tensor dy = testing::random_normal({2, 3, 72}, 812, DType::bf16);
  autograd::Var x_cpu = autograd::leaf(x.to(DType::f32), true), w_cpu = autograd::leaf(w.to(DType::f32), true);
  autograd::Var y_cpu = ops::linear(x_cpu, w_cpu);
  autograd::backward({y_cpu}, {dy.to(DType::f32)});
  for (DType weight_dtype : {DType::bf16, DType::f32}) {
    SCOPED_TRACE(dtype_name(weight_dtype));
    autograd::Var x_gpu = autograd::leaf(x.to(Device::cuda(0)), true);
    autograd::Var w_gpu = autograd::leaf(w.to(weight_dtype).to(Device::cuda(0)), true);
    autograd::Var y_gpu = ops::linear_of_constant_weight(x_gpu, w_gpu);
    autograd::backward({y_gpu}, {dy.to(Device::cuda(0))});
    EXPECT_TRUE(testing::all_close(y_gpu->value.to_doubles(), y_cpu->value.to_doubles(), 1e-2, 5e-2)) << "y";
    EXPECT_TRUE(testing::all_close(x_gpu->grad.to_doubles(), x_cpu->grad.to_doubles(), 1e-2, 5e-2)) << "dx";
    EXPECT_TRUE(testing::all_close(w_gpu->grad.to_doubles(), w_cpu->grad.to_doubles(), 1e-2, 5e-2)) << "dw";
  }
}

TEST_F(CudaGemv, SwigluEpilogueEqualsTheProductsThenSwiglu) {
  // One launch writing SiLU(x Wgᵀ) * (x Wuᵀ) equals, bit for bit, the two products followed by the
  // SwiGLU kernel (both round gate and up to bf16 first); and the CPU in f32 within bf16 rounding.
  // K 1024 takes the one-chunk kernel, K 2304 the chunked one; 300 rows end in a partial group.
  for (const int64_t K : {int64_t(1024), int64_t(2304)}) {
    SCOPED_TRACE(::testing::Message() << "K " << K);
    const int64_t rows = 4, N = 300;
    const Tensor x = testing::random_normal({rows, K}, 760 + K, DType::bf16);
    const Tensor gate_w = testing::random_normal({N, K}, 761 + K, DType::bf16, 0.05);
    const Tensor up_w = testing::random_normal({N, K}, 762 + K, DType::bf16, 0.05);
    autograd::NoGradScope no_grad;
    const autograd::Var x_gpu = autograd::leaf(x.to(Device::cuda(0)));
    const autograd::Var gate_gpu = autograd::leaf(gate_w.to(Device::cuda(0)));
    const autograd::Var up_gpu = autograd::leaf(up_w.to(Device::cuda(0)));
    const std::vector<double> fused = ops::swiglu_of_constant_weights(x_gpu, gate_gpu, up_gpu)->value.to_doubles();
    const std::vector<autograd::Var> separate = ops::linears_of_constant_weights(x_gpu, {gate_gpu, up_gpu});
    const std::vector<double> unfused = ops::swiglu(separate[0], separate[1])->value.to_doubles();
    ASSERT_EQ(fused.size(), size_t(rows * N));
    for (size_t i = 0; i < fused.size(); ++i) ASSERT_EQ(fused[i], unfused[i]) << "element " << i;

    const autograd::Var x_cpu = autograd::leaf(x.to(DType::f32));
    const autograd::Var h_cpu = ops::swiglu(ops::linear(x_cpu, autograd::leaf(gate_w.to(DType::f32))),
                                            ops::linear(x_cpu, autograd::leaf(up_w.to(DType::f32))));
    EXPECT_TRUE(testing::close_to_reference(fused, h_cpu->value.to_doubles(), 2e-2));
  }
}

}  // namespace
}  // namespace braid
