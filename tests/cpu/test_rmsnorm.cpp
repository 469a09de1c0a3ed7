// RMSNorm and the fused add + RMSNorm: forward against a naive double loop, gradients through
// gradcheck (from either output of the fused form, and from both), bad-input messages.
#include <cmath>

#include "autograd/gradcheck.h"
#include "autograd/tape.h"
#include "layers/ops/elementwise.h"
#include "layers/ops/rmsnorm.h"
#include "tests/test_util.h"

namespace braid {
namespace {

using autograd::leaf;
using autograd::Var;
using testing::all_close;
using testing::error_of;
using testing::random_normal;

std::vector<double> naive_rmsnorm(const std::vector<double>& x, const std::vector<double>& weight,
                                  double eps) {
  const size_t dim = weight.size();
  std::vector<double> y(x.size());
  for (size_t row = 0; row < x.size() / dim; ++row) {
    double mean_square = 0;
    for (size_t j = 0; j < dim; ++j)
      mean_square += x[row * dim + j] * x[row * dim + j] / double(dim);
    for (size_t j = 0; j < dim; ++j)
      y[row * dim + j] = x[row * dim + j] / std::sqrt(mean_square + eps) * weight[j];
  }
  return y;
}

TEST(Rmsnorm, ForwardMatchesNaiveLoop) {
  uint64_t seed = 600;
  for (const Shape& shape : {Shape{3, 7}, Shape{2, 5, 33}, Shape{129}}) {
    Tensor x = random_normal(shape, seed++, DType::f32, 3.0);
    Tensor weight = random_normal({shape.back()}, seed++, DType::f32);
    for (double eps : {1e-5, 0.5}) {
      Var y = ops::rmsnorm(leaf(x), leaf(weight), eps);
      EXPECT_EQ(y->value.shape(), shape);
      EXPECT_TRUE(
          all_close(y->value, naive_rmsnorm(x.to_doubles(), weight.to_doubles(), eps), 1e-5, 1e-6));
    }
  }
}

TEST(AddRmsnorm, ForwardMatchesNaiveLoop) {
  uint64_t seed = 610;
  for (const Shape& shape : {Shape{4, 9}, Shape{3, 2, 65}}) {
    Tensor x = random_normal(shape, seed++, DType::f32),
           residual = random_normal(shape, seed++, DType::f32, 2.0);
    Tensor weight = random_normal({shape.back()}, seed++, DType::f32);
    ops::AddRmsnormResult out = ops::add_rmsnorm(leaf(x), leaf(residual), leaf(weight));
    std::vector<double> sum = x.to_doubles(), r = residual.to_doubles();
    for (size_t i = 0; i < sum.size(); ++i) sum[i] += r[i];
    EXPECT_TRUE(all_close(out.sum->value, sum, 1e-6, 1e-6));
    EXPECT_TRUE(
        all_close(out.normed->value, naive_rmsnorm(sum, weight.to_doubles(), 1e-5), 1e-5, 1e-6));
  }
}

TEST(Rmsnorm, Gradcheck) {
  uint64_t seed = 620;
  for (const Shape& shape : {Shape{4, 3}, Shape{2, 3, 5}}) {
    auto result = autograd::gradcheck(
        [](const std::vector<Var>& in) { return ops::rmsnorm(in[0], in[1], 1e-3); },
        {random_normal(shape, seed++), random_normal({shape.back()}, seed++)});
    EXPECT_TRUE(result.ok) << result.report;
  }
}

TEST(AddRmsnorm, GradcheckThroughEitherOutputAndBoth) {
  using Pick = Var (*)(const ops::AddRmsnormResult&);
  const Pick picks[] = {
      [](const ops::AddRmsnormResult& out) { return out.normed; },
      [](const ops::AddRmsnormResult& out) { return out.sum; },
      [](const ops::AddRmsnormResult& out) {
        return ops::add(out.sum, ops::scale(out.normed, 1.5));
      },
  };
  uint64_t seed = 630;
  for (const Shape& shape : {Shape{3, 4}, Shape{2, 2, 5}})
    for (size_t p = 0; p < std::size(picks); ++p) {
      auto result = autograd::gradcheck(
          [&](const std::vector<Var>& in) {
            return picks[p](ops::add_rmsnorm(in[0], in[1], in[2]));
          },
          {random_normal(shape, seed++), random_normal(shape, seed++),
           random_normal({shape.back()}, seed++)});
      EXPECT_TRUE(result.ok) << "output choice " << p << "\n" << result.report;
    }
}

TEST(Rmsnorm, BadArgumentsNameBothShapes) {
  Var x = leaf(random_normal({2, 5}, 1, DType::f32)),
      weight = leaf(random_normal({4}, 2, DType::f32));
  std::string message = error_of([&] { ops::rmsnorm(x, weight); });
  EXPECT_PRED_FORMAT2(::testing::IsSubstring,
                      "rmsnorm: x has shape [2, 5] but weight has shape [4]", message);
  message = error_of([&] { ops::rmsnorm(x, leaf(random_normal({5}, 3, DType::f32)), 0.0); });
  EXPECT_PRED_FORMAT2(::testing::IsSubstring, "rmsnorm: eps must be positive, got 0", message);
  message = error_of([&] {
    ops::add_rmsnorm(x, leaf(random_normal({5, 2}, 4, DType::f32)),
                     leaf(random_normal({5}, 5, DType::f32)));
  });
  EXPECT_PRED_FORMAT2(::testing::IsSubstring,
                      "add_rmsnorm: x has shape [2, 5] but residual has shape [5, 2]", message);
}

}  // namespace
}  // namespace braid
