// The cuBLASLt GEMM against the CPU GEMM on host copies of the same inputs, its per-shape plan
// cache, and ops::matmul / ops::linear forward and backward on a CUDA device against the CPU.
#include <cmath>
#include <limits>
#include <tuple>

#include "autograd/tape.h"
#include "kernels/cpu/gemm.h"
#include "kernels/cuda/gemm.h"
#include "layers/ops/matmul.h"
#include "tests/cuda/cuda_test_util.h"
#include "tests/test_util.h"

namespace braid {
namespace {

using testing::error_of;

using CudaGemm = testing::CudaTest;
using CudaMatmul = testing::CudaTest;

struct GemmCase {
  bool trans_a, trans_b;
  int64_t M, N, K, pad;  // pad: extra elements at the end of every stored row of A, B and C
  float alpha, beta;
};

// Runs one case on the device in `dtype` and compares C (read back as doubles) with the CPU gemm
// in f32 on the same (dtype-rounded) values: |got - expected| <= rtol * (|alpha| sum_k |a_ik b_kj|
// + |beta c_ij|). With beta == 0 the device C starts as NaN, so any unwritten element shows.
void check_gemm(const GemmCase& c, DType dtype, uint64_t seed, double rtol) {
  const int64_t a_rows = c.trans_a ? c.K : c.M, a_cols = c.trans_a ? c.M : c.K;
  const int64_t b_rows = c.trans_b ? c.N : c.K, b_cols = c.trans_b ? c.K : c.N;
  const int64_t lda = a_cols + c.pad, ldb = b_cols + c.pad, ldc = c.N + c.pad;
  const Tensor a = testing::random_normal({a_rows, lda}, seed, dtype);
  const Tensor b = testing::random_normal({b_rows, ldb}, seed + 1, dtype);
  const Tensor c_start = c.beta == 0.0f
                             ? Tensor::full({c.M, ldc}, std::numeric_limits<double>::quiet_NaN(), dtype)
                             : testing::random_normal({c.M, ldc}, seed + 2, dtype);
  const Tensor a_device = a.to(Device::cuda(0)), b_device = b.to(Device::cuda(0));
  const Tensor c_device = c_start.to(Device::cuda(0));
  kernels::cuda::gemm(c.trans_a, c.trans_b, c.M, c.N, c.K, c.alpha, a_device.raw_data(), lda,
                      b_device.raw_data(), ldb, c.beta, c_device.raw_data(), ldc, dtype);
  const std::vector<double> got = c_device.to_doubles();

  const Tensor a_host = a.to(DType::f32), b_host = b.to(DType::f32);
  Tensor expected = c_start.to(DType::f32);
  kernels::cpu::gemm<float>(c.trans_a, c.trans_b, c.M, c.N, c.K, c.alpha, a_host.data<float>(), lda,
                            b_host.data<float>(), ldb, c.beta, expected.data<float>(), ldc);
  const std::vector<double> want = expected.to_doubles(), av = a_host.to_doubles(),
                            bv = b_host.to_doubles(), start = c_start.to_doubles();
  for (int64_t i = 0; i < c.M; ++i) {
    for (int64_t j = 0; j < c.N; ++j) {
      double terms = c.beta == 0.0f ? 0.0 : std::abs(c.beta * start[i * ldc + j]);
      for (int64_t k = 0; k < c.K; ++k) {
        const double a_ik = c.trans_a ? av[k * lda + i] : av[i * lda + k];
        const double b_kj = c.trans_b ? bv[j * ldb + k] : bv[k * ldb + j];
        terms += std::abs(c.alpha * a_ik * b_kj);
      }
      const double error = std::abs(got[i * ldc + j] - want[i * ldc + j]);
      ASSERT_TRUE(error <= rtol * terms)
          << "C[" << i << ", " << j << "] = " << got[i * ldc + j] << ", expected "
          << want[i * ldc + j] << " (terms " << terms << ") for trans_a=" << c.trans_a
          << " trans_b=" << c.trans_b << " M=" << c.M << " N=" << c.N << " K=" << c.K
          << " pad=" << c.pad << " in " << dtype_name(dtype);
    }
    for (int64_t j = c.N; j < ldc; ++j) {  // the padding is never touched
      const double before = start[i * ldc + j];
      ASSERT_TRUE(std::isnan(before) ? std::isnan(got[i * ldc + j]) : got[i * ldc + j] == before)
          << "padding C[" << i << ", " << j << "] changed";
    }
  }
}

std::vector<GemmCase> cases_for_every_transpose() {
  std::vector<GemmCase> cases;
  for (bool trans_a : {false, true})
    for (bool trans_b : {false, true}) {
      cases.push_back({trans_a, trans_b, 37, 19, 53, 0, 1.0f, 0.0f});
      cases.push_back({trans_a, trans_b, 130, 300, 270, 3, 0.75f, 0.0f});
      cases.push_back({trans_a, trans_b, 37, 19, 53, 5, 1.0f, -0.5f});
      cases.push_back({trans_a, trans_b, 1, 67, 9, 1, 1.5f, 2.0f});
    }
  return cases;
}

TEST_F(CudaGemm, F32MatchesTheCpuForEveryTranspose) {
  uint64_t seed = 100;
  for (const GemmCase& c : cases_for_every_transpose()) {
    check_gemm(c, DType::f32, seed, 1e-5);
    seed += 3;
  }
}

TEST_F(CudaGemm, Bf16MatchesTheCpuOnTheSameValues) {
  uint64_t seed = 200;
  // bf16 C rounds each result to 8 significant bits: error <= 2^-8 |c| <= 2^-8 * terms.
  for (const GemmCase& c : cases_for_every_transpose()) {
    check_gemm(c, DType::bf16, seed, 1e-2);
    seed += 3;
  }
}

TEST_F(CudaGemm, ZeroInnerSizeWritesZeros) {
  Tensor c = Tensor::full({4, 6}, std::numeric_limits<double>::quiet_NaN(), DType::f32, Device::cuda(0));
  Tensor a = Tensor::empty({4, 1}, DType::f32, Device::cuda(0));
  kernels::cuda::gemm(false, false, 4, 5, 0, 1.0f, a.raw_data(), 1, a.raw_data(), 5, 0.0f,
                      c.raw_data(), 6, DType::f32);
  std::vector<double> got = c.to_doubles();
  for (int64_t i = 0; i < 4; ++i) {
    for (int64_t j = 0; j < 5; ++j) EXPECT_EQ(got[i * 6 + j], 0.0) << i << ", " << j;
    EXPECT_TRUE(std::isnan(got[i * 6 + 5]));
  }
}

TEST_F(CudaGemm, RejectsShortLeadingDimensionsAndOtherDtypes) {
  Tensor buffer = Tensor::empty({64}, DType::f32, Device::cuda(0));
  std::string message = testing::error_of([&] {
    kernels::cuda::gemm(false, false, 4, 5, 6, 1.0f, buffer.raw_data(), 5, buffer.raw_data(), 5,
                        0.0f, buffer.raw_data(), 5, DType::f32);
  });
  EXPECT_NE(message.find("lda=5"), std::string::npos) << message;
  message = testing::error_of([&] {
    kernels::cuda::gemm(false, false, 2, 2, 2, 1.0f, buffer.raw_data(), 2, buffer.raw_data(), 2,
                        0.0f, buffer.raw_data(), 2, DType::f64);
  });
  EXPECT_NE(message.find("f64"), std::string::npos) << message;
}

TEST_F(CudaGemm, PlansOncePerShapeNotPerCall) {
  // Sizes no other test uses, so the first call is always a new shape.
  Tensor a = testing::random_normal({23, 29}, 300, DType::f32).to(Device::cuda(0));
  Tensor b = testing::random_normal({29, 31}, 301, DType::f32).to(Device::cuda(0));
  Tensor c = Tensor::empty({23, 31}, DType::f32, Device::cuda(0));
  const size_t before = kernels::cuda::gemm_plan_cache_size();
  for (int call = 0; call < 3; ++call)
    kernels::cuda::gemm(false, false, 23, 31, 29, 1.0f, a.raw_data(), 29, b.raw_data(), 31, 0.0f,
                        c.raw_data(), 31, DType::f32);
  EXPECT_EQ(kernels::cuda::gemm_plan_cache_size(), before + 1);
  for (int call = 0; call < 3; ++call)  // a new shape: (22, 31) with the same storage
    kernels::cuda::gemm(false, false, 22, 31, 29, 1.0f, a.raw_data(), 29, b.raw_data(), 31, 0.0f,
                        c.raw_data(), 31, DType::f32);
  EXPECT_EQ(kernels::cuda::gemm_plan_cache_size(), before + 2);
}

struct OpResult {
  std::vector<double> output, grad_first, grad_second;
};

// Runs `op` on leaves holding `first` and `second` on `device`, backpropagates `seed`, and
// returns the output and both gradients (checked to be in their values' dtypes) as doubles.
template <typename Op>
OpResult run_op(Op&& op, const Tensor& first, const Tensor& second, const Tensor& seed,
                Device device) {
  autograd::Var x = autograd::leaf(first.to(device), true);
  autograd::Var w = autograd::leaf(second.to(device), true);
  autograd::Var y = op(x, w);
  EXPECT_TRUE(y->value.device() == device);
  autograd::backward({y}, {seed.to(device)});
  EXPECT_EQ(x->grad.dtype(), autograd::grad_dtype(x->value.dtype()));
  EXPECT_EQ(w->grad.dtype(), autograd::grad_dtype(w->value.dtype()));
  EXPECT_TRUE(x->grad.device() == device);
  return {y->value.to_doubles(), x->grad.to_doubles(), w->grad.to_doubles()};
}

void expect_same(const OpResult& cuda, const OpResult& cpu, double rtol, double atol) {
  EXPECT_TRUE(testing::all_close(cuda.output, cpu.output, rtol, atol)) << "output";
  EXPECT_TRUE(testing::all_close(cuda.grad_first, cpu.grad_first, rtol, atol)) << "first gradient";
  EXPECT_TRUE(testing::all_close(cuda.grad_second, cpu.grad_second, rtol, atol)) << "second gradient";
}

TEST_F(CudaMatmul, LinearForwardAndBackwardMatchTheCpu) {
  for (const Shape& x_shape : {Shape{3, 5, 37}, Shape{130, 270}}) {
    const int64_t in = x_shape.back(), out = in == 37 ? 19 : 300;
    Tensor x = testing::random_normal(x_shape, 400 + in, DType::f32);
    Tensor w = testing::random_normal({out, in}, 401 + in, DType::f32, 0.2);
    Shape y_shape = x_shape;
    y_shape.back() = out;
    Tensor dy = testing::random_normal(y_shape, 402 + in, DType::f32);
    OpResult cpu = run_op(ops::linear, x, w, dy, Device::cpu());
    OpResult cuda = run_op(ops::linear, x, w, dy, Device::cuda(0));
    // Sums of up to 130 products of O(1) terms in fp32 on both sides.
    expect_same(cuda, cpu, 1e-5, 1e-5);
  }
}

TEST_F(CudaMatmul, MatmulEveryTransposeMatchesTheCpu) {
  const int64_t M = 37, N = 19, K = 53;
  uint64_t seed = 500;
  for (bool trans_a : {false, true})
    for (bool trans_b : {false, true}) {
      Tensor a = testing::random_normal(trans_a ? Shape{K, M} : Shape{M, K}, seed++, DType::f32);
      Tensor b = testing::random_normal(trans_b ? Shape{N, K} : Shape{K, N}, seed++, DType::f32);
      Tensor dc = testing::random_normal({M, N}, seed++, DType::f32);
      auto op = [&](const autograd::Var& x, const autograd::Var& w) {
        return ops::matmul(x, w, trans_a, trans_b);
      };
      OpResult cpu = run_op(op, a, b, dc, Device::cpu());
      OpResult cuda = run_op(op, a, b, dc, Device::cuda(0));
      SCOPED_TRACE(::testing::Message() << "trans_a=" << trans_a << " trans_b=" << trans_b);
      expect_same(cuda, cpu, 1e-5, 1e-5);
    }
}

TEST_F(CudaMatmul, LinearBf16GradientsCloseToTheCpu) {
  // The CPU reference runs in f32 on the bf16-rounded values; the device rounds outputs, the
  // incoming gradient and x's gradient to bf16 (8 significant bits). A bf16 weight (an activation
  // used as a matrix) gets a bf16 gradient, an fp32 master weight an fp32 one (run_op checks).
  Tensor x = testing::random_normal({4, 9, 64}, 600, DType::bf16);
  Tensor w = testing::random_normal({48, 64}, 601, DType::bf16, 0.2);
  Tensor dy = testing::random_normal({4, 9, 48}, 602, DType::bf16);
  OpResult cpu = run_op(ops::linear, x.to(DType::f32), w.to(DType::f32), dy.to(DType::f32),
                        Device::cpu());
  OpResult cuda = run_op(ops::linear, x, w, dy.to(DType::f32), Device::cuda(0));
  expect_same(cuda, cpu, 1e-2, 5e-2);
  OpResult master = run_op(ops::linear, x, w.to(DType::f32), dy.to(DType::f32), Device::cuda(0));
  expect_same(master, cpu, 1e-2, 5e-2);
}

TEST_F(CudaMatmul, RejectsF64OnTheDevice) {
  autograd::Var a = autograd::leaf(Tensor::zeros({2, 3}, DType::f64, Device::cuda(0)), false);
  autograd::Var b = autograd::leaf(Tensor::zeros({3, 4}, DType::f64, Device::cuda(0)), false);
  std::string message = testing::error_of([&] { ops::matmul(a, b); });
  EXPECT_NE(message.find("f64[2, 3]"), std::string::npos) << message;
  EXPECT_NE(message.find("f32 or bf16"), std::string::npos) << message;
}

TEST_F(CudaGemm, Bf16OperandsWriteF32Results) {
  // C in f32 keeps the fp32 accumulator unrounded: within fp32 summation error of the CPU on the
  // same bf16 values.
  const int64_t M = 37, N = 45, K = 300;
  const Tensor a = testing::random_normal({M, K}, 700, DType::bf16);
  const Tensor b = testing::random_normal({N, K}, 701, DType::bf16);
  const Tensor a_device = a.to(Device::cuda(0)), b_device = b.to(Device::cuda(0));
  Tensor c = Tensor::empty({M, N}, DType::f32, Device::cuda(0));
  kernels::cuda::gemm(false, true, M, N, K, 1.0f, a_device.raw_data(), K, b_device.raw_data(), K,
                      0.0f, c.raw_data(), N, DType::bf16, DType::f32, nullptr);
  Tensor expected = Tensor::empty({M, N}, DType::f32);
  const Tensor a_host = a.to(DType::f32), b_host = b.to(DType::f32);
  kernels::cpu::gemm<float>(false, true, M, N, K, 1.0f, a_host.data<float>(), K,
                            b_host.data<float>(), K, 0.0f, expected.data<float>(), N);
  EXPECT_TRUE(testing::close_to_reference(c.to_doubles(), expected.to_doubles(), 1e-5));
}

TEST_F(CudaMatmul, LinearWithFp32MasterWeightsMatchesTheCpu) {
  using Role = testing::OpInput::Role;
  auto linear = [](const std::vector<autograd::Var>& in) {
    return std::vector<autograd::Var>{ops::linear(in[0], in[1])};
  };
  uint64_t seed = 800;
  for (const auto& [rows, in, out] : {std::tuple{7, 33, 19}, std::tuple{300, 256, 130}}) {
    const std::vector<testing::OpInput> inputs = {
        {testing::random_normal({rows, in}, seed, DType::f32), Role::activation},
        {testing::random_normal({out, in}, seed + 1, DType::f32, 0.2), Role::parameter}};
    testing::expect_cuda_matches_cpu(linear, inputs, DType::f32, 1e-5, seed + 2);
    // In bf16 the device also rounds what the CPU keeps in fp32: the master weight's copy and the
    // incoming gradient (2^-9 relative each). Over K >= 130 terms the worst of ~10^5 elements
    // measured 1.07e-2 of the rms on an H200 (typical ~4e-3), so the bound is 2e-2.
    testing::expect_cuda_matches_cpu(linear, inputs, DType::bf16, 2e-2, seed + 3);
    seed += 10;
  }
}

}  // namespace
}  // namespace braid
