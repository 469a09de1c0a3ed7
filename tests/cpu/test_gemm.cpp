// GEMM kernel, matmul and linear: forward against naive double loops, gradients through gradcheck.
#include <cmath>
#include <limits>

#include "autograd/gradcheck.h"
#include "autograd/tape.h"
#include "kernels/cpu/gemm.h"
#include "layers/ops/matmul.h"
#include "tests/test_util.h"

namespace braid {
namespace {

using autograd::leaf;
using autograd::Var;
using testing::all_close;
using testing::error_of;
using testing::random_normal;

// The message of the braid::Error `action` raises ("" if it raises none).
// Element (row, col) of op(M) for a row-major matrix M with row stride ld.
double element(const std::vector<double>& m, int64_t ld, bool trans, int64_t row, int64_t col) {
  return trans ? m[size_t(col * ld + row)] : m[size_t(row * ld + col)];
}

struct NaiveGemm {
  std::vector<double> C;
  // Per element, |alpha| sum_k |op(A)_ik op(B)_kj| + |beta C_ij|: the scale of the rounding error
  // of a computed dot product (0 on C's padding, which must stay untouched).
  std::vector<double> magnitude;
};

// alpha * op(A) op(B) + beta * C, C (M, N) with row stride ldc.
NaiveGemm naive_gemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, double alpha,
                     const std::vector<double>& A, int64_t lda, const std::vector<double>& B,
                     int64_t ldb, double beta, std::vector<double> C, int64_t ldc) {
  std::vector<double> magnitude(C.size(), 0.0);
  for (int64_t i = 0; i < M; ++i)
    for (int64_t j = 0; j < N; ++j) {
      double dot = 0, absolute = 0;
      for (int64_t k = 0; k < K; ++k) {
        const double product = element(A, lda, trans_a, i, k) * element(B, ldb, trans_b, k, j);
        dot += product;
        absolute += std::abs(product);
      }
      double& c = C[size_t(i * ldc + j)];
      magnitude[size_t(i * ldc + j)] = std::abs(alpha) * absolute + std::abs(beta * c);
      c = alpha * dot + beta * c;
    }
  return {std::move(C), std::move(magnitude)};
}

// |actual - expected| <= rtol * magnitude everywhere: relative accuracy of each dot product
// measured against the size of its terms, since cancellation can leave the sum itself near 0.
::testing::AssertionResult within_rounding(const Tensor& actual, const NaiveGemm& expected,
                                           double rtol) {
  std::vector<double> values = actual.to_doubles();
  for (size_t i = 0; i < values.size(); ++i)
    if (!(std::abs(values[i] - expected.C[i]) <= rtol * expected.magnitude[i]))
      return ::testing::AssertionFailure()
             << "element " << i << ": got " << values[i] << ", expected " << expected.C[i]
             << " (terms of size " << expected.magnitude[i] << ")";
  return ::testing::AssertionSuccess();
}

// Runs the kernel on padded random operands and compares every element of C, padding included,
// with the naive loop.
template <typename T>
void check_gemm_kernel(int64_t M, int64_t N, int64_t K, bool trans_a, bool trans_b, double beta,
                       uint64_t seed, double rtol) {
  const int64_t pad = 3;
  const int64_t a_rows = trans_a ? K : M, a_cols = trans_a ? M : K;
  const int64_t b_rows = trans_b ? N : K, b_cols = trans_b ? K : N;
  const int64_t lda = a_cols + pad, ldb = b_cols + pad, ldc = N + pad;
  const DType dtype = dtype_of<T>;
  Tensor A = random_normal({a_rows, lda}, seed, dtype),
         B = random_normal({b_rows, ldb}, seed + 1, dtype);
  Tensor C = random_normal({M, ldc}, seed + 2, dtype);
  const double alpha = 0.75;
  NaiveGemm expected = naive_gemm(trans_a, trans_b, M, N, K, alpha, A.to_doubles(), lda,
                                  B.to_doubles(), ldb, beta, C.to_doubles(), ldc);
  kernels::cpu::gemm<T>(trans_a, trans_b, M, N, K, T(alpha), A.data<T>(), lda, B.data<T>(), ldb,
                        T(beta), C.data<T>(), ldc);
  EXPECT_TRUE(within_rounding(C, expected, rtol))
      << M << "x" << N << "x" << K << " trans_a " << trans_a << " trans_b " << trans_b;
}

TEST(GemmKernel, MatchesNaiveLoopForAllTransposes) {
  // 37x19x53 fits one tile; 130x300x270 spans several tiles in M, N and K.
  const int64_t sizes[2][3] = {{37, 19, 53}, {130, 300, 270}};
  uint64_t seed = 100;
  for (const auto& size : sizes)
    for (bool trans_a : {false, true})
      for (bool trans_b : {false, true}) {
        check_gemm_kernel<float>(size[0], size[1], size[2], trans_a, trans_b, -1.25, seed += 3,
                                 1e-5);
        check_gemm_kernel<double>(size[0], size[1], size[2], trans_a, trans_b, 0.5, seed += 3,
                                  1e-13);
      }
}

TEST(GemmKernel, BetaZeroIgnoresGarbageInC) {
  const int64_t M = 5, N = 7, K = 9;
  Tensor A = random_normal({M, K}, 1, DType::f32), B = random_normal({K, N}, 2, DType::f32);
  Tensor C = Tensor::full({M, N}, std::numeric_limits<double>::quiet_NaN(), DType::f32);
  kernels::cpu::gemm<float>(false, false, M, N, K, 1.0f, A.data<float>(), K, B.data<float>(), N,
                            0.0f, C.data<float>(), N);
  NaiveGemm expected = naive_gemm(false, false, M, N, K, 1.0, A.to_doubles(), K, B.to_doubles(), N,
                                  0.0, std::vector<double>(M * N, 0.0), N);
  EXPECT_TRUE(within_rounding(C, expected, 1e-6));
}

TEST(GemmKernel, EmptyInnerDimensionScalesC) {
  Tensor C = random_normal({3, 4}, 3, DType::f64);
  std::vector<double> expected = C.to_doubles();
  for (double& value : expected) value *= 2.5;
  kernels::cpu::gemm<double>(false, false, 3, 4, 0, 1.0, nullptr, 0, nullptr, 4, 2.5,
                             C.data<double>(), 4);
  EXPECT_TRUE(all_close(C, expected, 1e-15, 0));
}

TEST(GemmKernel, RejectsShortLeadingDimension) {
  std::vector<float> a(12), b(12), c(9);
  std::string message = error_of([&] {
    kernels::cpu::gemm<float>(false, false, 3, 3, 4, 1.0f, a.data(), 3, b.data(), 3, 0.0f, c.data(),
                              3);
  });
  EXPECT_PRED_FORMAT2(::testing::IsSubstring, "lda=3", message);
  EXPECT_PRED_FORMAT2(::testing::IsSubstring, "K=4", message);
}

// op(a) op(b) of row-major matrices given with their shapes.
std::vector<double> naive_matmul(const Tensor& a, const Tensor& b, bool trans_a, bool trans_b) {
  const int64_t M = trans_a ? a.size(1) : a.size(0), K = trans_a ? a.size(0) : a.size(1);
  const int64_t N = trans_b ? b.size(0) : b.size(1);
  return naive_gemm(trans_a, trans_b, M, N, K, 1.0, a.to_doubles(), a.size(1), b.to_doubles(),
                    b.size(1), 0.0, std::vector<double>(size_t(M * N), 0.0), N)
      .C;
}

// Stored shape of an operand whose op() is (rows, cols).
Shape stored(int64_t rows, int64_t cols, bool trans) {
  return trans ? Shape{cols, rows} : Shape{rows, cols};
}

TEST(Matmul, ForwardMatchesNaiveLoop) {
  const int64_t sizes[2][3] = {{1, 9, 4}, {33, 17, 70}};
  uint64_t seed = 200;
  for (const auto& size : sizes)
    for (bool trans_a : {false, true})
      for (bool trans_b : {false, true}) {
        Tensor a = random_normal(stored(size[0], size[2], trans_a), seed++, DType::f32);
        Tensor b = random_normal(stored(size[2], size[1], trans_b), seed++, DType::f32);
        Var c = ops::matmul(leaf(a), leaf(b), trans_a, trans_b);
        EXPECT_EQ(c->value.shape(), (Shape{size[0], size[1]}));
        EXPECT_TRUE(all_close(c->value, naive_matmul(a, b, trans_a, trans_b), 1e-5, 1e-5));
      }
}

TEST(Matmul, Gradcheck) {
  const int64_t sizes[2][3] = {{3, 4, 5}, {6, 1, 7}};
  uint64_t seed = 300;
  for (const auto& size : sizes)
    for (bool trans_a : {false, true})
      for (bool trans_b : {false, true}) {
        auto result = autograd::gradcheck(
            [&](const std::vector<Var>& in) { return ops::matmul(in[0], in[1], trans_a, trans_b); },
            {random_normal(stored(size[0], size[2], trans_a), seed++),
             random_normal(stored(size[2], size[1], trans_b), seed++)});
        EXPECT_TRUE(result.ok) << "trans_a " << trans_a << " trans_b " << trans_b << "\n"
                               << result.report;
      }
}

TEST(Matmul, InnerSizeMismatchNamesBothShapes) {
  Var a = leaf(random_normal({2, 3}, 1, DType::f32)),
      b = leaf(random_normal({4, 5}, 2, DType::f32));
  std::string message = error_of([&] { ops::matmul(a, b); });
  EXPECT_PRED_FORMAT2(::testing::IsSubstring,
                      "a has shape [2, 3] but b has shape [4, 5]: inner sizes 3 and 4 differ",
                      message);
  message = error_of([&] { ops::matmul(a, leaf(random_normal({3}, 3, DType::f32))); });
  EXPECT_PRED_FORMAT2(::testing::IsSubstring, "matmul: b must have 2 dimensions, got shape [3]",
                      message);
}

// x (..., in) times weightᵀ (in, out).
std::vector<double> naive_linear(const Tensor& x, const Tensor& weight) {
  const int64_t out = weight.size(0), in = weight.size(1), rows = x.numel() / in;
  std::vector<double> xs = x.to_doubles(), ws = weight.to_doubles(), y(size_t(rows * out), 0.0);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t o = 0; o < out; ++o)
      for (int64_t i = 0; i < in; ++i)
        y[size_t(r * out + o)] += xs[size_t(r * in + i)] * ws[size_t(o * in + i)];
  return y;
}

TEST(Linear, ForwardMatchesNaiveLoop) {
  for (const auto& [x_shape, out] :
       {std::pair{Shape{7, 13}, int64_t(5)}, std::pair{Shape{2, 9, 31}, int64_t(70)}}) {
    Tensor x = random_normal(x_shape, 401, DType::f32),
           weight = random_normal({out, x_shape.back()}, 402, DType::f32);
    Var y = ops::linear(leaf(x), leaf(weight));
    Shape y_shape = x_shape;
    y_shape.back() = out;
    EXPECT_EQ(y->value.shape(), y_shape);
    EXPECT_TRUE(all_close(y->value, naive_linear(x, weight), 1e-5, 1e-5));
  }
}

TEST(Linear, Gradcheck) {
  for (const auto& [x_shape, out] :
       {std::pair{Shape{4, 3}, int64_t(5)}, std::pair{Shape{2, 3, 6}, int64_t(4)}}) {
    auto result = autograd::gradcheck(
        [](const std::vector<Var>& in) { return ops::linear(in[0], in[1]); },
        {random_normal(x_shape, 411), random_normal({out, x_shape.back()}, 412)});
    EXPECT_TRUE(result.ok) << result.report;
  }
}

TEST(Linear, WeightGradientSumsOverLeadingDimsWithoutInputGradient) {
  Tensor x = random_normal({2, 3, 4}, 421), weight = random_normal({5, 4}, 422);
  Var x_var = leaf(x), weight_var = leaf(weight, true);
  Var y = ops::linear(x_var, weight_var);
  Tensor seed = random_normal({2, 3, 5}, 423);
  autograd::backward({y}, {seed});
  EXPECT_FALSE(x_var->grad.defined());
  // dW[o, i] = sum over rows of dy[r, o] * x[r, i].
  std::vector<double> dy = seed.to_doubles(), xs = x.to_doubles(), expected(20, 0.0);
  for (int64_t r = 0; r < 6; ++r)
    for (int64_t o = 0; o < 5; ++o)
      for (int64_t i = 0; i < 4; ++i)
        expected[size_t(o * 4 + i)] += dy[size_t(r * 5 + o)] * xs[size_t(r * 4 + i)];
  EXPECT_TRUE(all_close(weight_var->grad, expected, 1e-12, 1e-12));
}

TEST(Linear, InnerSizeMismatchNamesBothShapes) {
  Var x = leaf(random_normal({2, 5}, 1, DType::f32)),
      weight = leaf(random_normal({3, 4}, 2, DType::f32));
  std::string message = error_of([&] { ops::linear(x, weight); });
  EXPECT_PRED_FORMAT2(
      ::testing::IsSubstring,
      "linear: x has shape [2, 5] but weight has shape [3, 4]: inner sizes 5 and 4 differ",
      message);
  message = error_of([&] { ops::linear(x, leaf(random_normal({3, 5}, 3, DType::f64))); });
  // A weight of another dtype is read as a parameter: fp32 master weights are the only mix allowed.
  EXPECT_PRED_FORMAT2(::testing::IsSubstring,
                      "linear: weight is f64[3, 5] on cpu but the input is f32[2, 5] on cpu; it must be f32",
                      message);
}

}  // namespace
}  // namespace braid
