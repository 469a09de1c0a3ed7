// sigmoid and mul_scalar: forward against naive loops, gradients through gradcheck.
#include <cmath>

#include "autograd/gradcheck.h"
#include "layers/ops/gating.h"
#include "tests/test_util.h"

namespace braid {
namespace {

using autograd::leaf;
using autograd::Var;

TEST(Gating, SigmoidMatchesNaiveLoop) {
  Tensor x = testing::random_normal({4, 9}, 51, DType::f32, 3.0);
  std::vector<double> expected;
  for (double v : x.to_doubles()) expected.push_back(1 / (1 + std::exp(-v)));
  EXPECT_TRUE(testing::all_close(ops::sigmoid(leaf(x))->value, expected, 1e-6, 1e-7));
}

TEST(Gating, MulScalarMatchesNaiveLoop) {
  Tensor x = testing::random_normal({3, 7}, 52, DType::f32), s = testing::random_normal({1}, 53, DType::f32);
  std::vector<double> expected;
  for (double v : x.to_doubles()) expected.push_back(v * s.item());
  EXPECT_TRUE(testing::all_close(ops::mul_scalar(leaf(x), leaf(s))->value, expected, 1e-6, 1e-7));
}

TEST(Gating, Gradcheck) {
  for (const Shape& shape : {Shape{5}, Shape{2, 3, 4}}) {
    auto sig = autograd::gradcheck([](const std::vector<Var>& in) { return ops::sigmoid(in[0]); },
                                   {testing::random_normal(shape, 54, DType::f64, 2.0)});
    EXPECT_TRUE(sig.ok) << sig.report;
    auto mul = autograd::gradcheck(
        [](const std::vector<Var>& in) { return ops::mul_scalar(in[0], in[1]); },
        {testing::random_normal(shape, 55), testing::random_normal({1}, 56)});
    EXPECT_TRUE(mul.ok) << mul.report;
  }
}

TEST(Gating, MulScalarRejectsAVector) {
  try {
    ops::mul_scalar(leaf(testing::random_normal({2, 3}, 1)), leaf(testing::random_normal({3}, 2)));
    FAIL() << "expected braid::Error";
  } catch (const Error& error) {
    EXPECT_NE(std::string(error.what()).find("[3]"), std::string::npos) << error.what();
    EXPECT_NE(std::string(error.what()).find("[2, 3]"), std::string::npos) << error.what();
  }
}

}  // namespace
}  // namespace braid
