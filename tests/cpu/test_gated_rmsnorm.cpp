// Gated RMSNorm (gate before the norm): forward against a naive double loop (also with the gate a
// slice of wider rows, as at decode), gradients through gradcheck.
#include <cmath>

#include "autograd/gradcheck.h"
#include "autograd/tape.h"
#include "layers/ops/gated_rmsnorm.h"
#include "tests/test_util.h"

namespace braid {
namespace {

using autograd::leaf;
using autograd::Var;
using testing::all_close;
using testing::random_normal;

// y, z viewed as (rows, groups * group_size); o = v / sqrt(mean_group v^2 + eps) * w, v = y SiLU(z).
std::vector<double> naive_gated_rmsnorm(const std::vector<double>& y, const std::vector<double>& z,
                                        const std::vector<double>& weight, int64_t groups,
                                        double eps) {
  const size_t channels = weight.size(), group_size = channels / size_t(groups);
  std::vector<double> v(y.size()), out(y.size());
  for (size_t i = 0; i < y.size(); ++i) v[i] = y[i] * z[i] / (1.0 + std::exp(-z[i]));
  for (size_t row = 0; row < y.size() / channels; ++row) {
    for (size_t g = 0; g < size_t(groups); ++g) {
      const size_t first = row * channels + g * group_size;
      double mean_square = 0;
      for (size_t k = 0; k < group_size; ++k) mean_square += v[first + k] * v[first + k] / double(group_size);
      for (size_t k = 0; k < group_size; ++k)
        out[first + k] = v[first + k] / std::sqrt(mean_square + eps) * weight[g * group_size + k];
    }
  }
  return out;
}

struct Case {
  Shape shape;
  int64_t groups;
};

TEST(GatedRmsnorm, ForwardMatchesNaiveLoop) {
  const Case cases[] = {{{37, 15}, 3}, {{2, 5, 21}, 7}, {{3, 11}, 1}};
  for (const Case& c : cases) {
    const int64_t channels = c.shape.back();
    for (DType dtype : {DType::f32, DType::f64}) {
      Tensor y = random_normal(c.shape, 71, dtype, 1.5), z = random_normal(c.shape, 72, dtype, 2.0);
      Tensor weight = random_normal({channels}, 73, dtype);
      Var out = ops::gated_rmsnorm(leaf(y), leaf(z), leaf(weight), c.groups);
      const double tol = dtype == DType::f32 ? 1e-5 : 1e-12;
      EXPECT_EQ(out->value.shape(), c.shape);
      EXPECT_TRUE(all_close(out->value, naive_gated_rmsnorm(y.to_doubles(), z.to_doubles(),
                                                            weight.to_doubles(), c.groups, 1e-5),
                            tol, tol))
          << shape_str(c.shape) << " groups " << c.groups << " " << dtype_name(dtype);
    }
  }
}

// At decode z is a slice of in_proj's rows; without a tape the kernel reads it in place (aligned
// rows, width 28) or from a copy (width 27): either way the naive loop's values, and bit for bit the
// result of a contiguous gate.
TEST(GatedRmsnorm, GateSlicedFromWiderRowsMatchesNaiveLoop) {
  autograd::NoGradScope no_grad;
  for (int64_t width : {28, 27}) {
    Tensor rows = random_normal({5, 1, width}, 111, DType::f32, 2.0);
    Tensor z = rows.narrow(2, 4, 12), y = random_normal({5, 1, 12}, 112, DType::f32, 1.5);
    Tensor weight = random_normal({12}, 113, DType::f32);
    Var out = ops::gated_rmsnorm(leaf(y), leaf(z), leaf(weight), 3);
    EXPECT_TRUE(all_close(out->value, naive_gated_rmsnorm(y.to_doubles(), z.to_doubles(), weight.to_doubles(), 3, 1e-5),
                          1e-5, 1e-5))
        << "width " << width;
    Var reference = ops::gated_rmsnorm(leaf(y), leaf(z.contiguous()), leaf(weight), 3);
    EXPECT_EQ(out->value.to_doubles(), reference->value.to_doubles()) << "width " << width;
  }
}

TEST(GatedRmsnorm, EpsIsUsed) {
  // With a tiny v, eps dominates the denominator.
  Tensor y = random_normal({2, 6}, 81, DType::f64, 1e-3), z = random_normal({2, 6}, 82);
  Tensor weight = random_normal({6}, 83);
  Var out = ops::gated_rmsnorm(leaf(y), leaf(z), leaf(weight), 2, 0.5);
  EXPECT_TRUE(all_close(out->value, naive_gated_rmsnorm(y.to_doubles(), z.to_doubles(),
                                                        weight.to_doubles(), 2, 0.5),
                        1e-12, 1e-15));
}

TEST(GatedRmsnorm, Gradcheck) {
  const Case cases[] = {{{4, 15}, 3}, {{2, 3, 10}, 2}, {{5, 7}, 1}};
  for (const Case& c : cases) {
    const int64_t channels = c.shape.back(), groups = c.groups;
    auto result = autograd::gradcheck(
        [groups](const std::vector<Var>& in) { return ops::gated_rmsnorm(in[0], in[1], in[2], groups); },
        {random_normal(c.shape, 91), random_normal(c.shape, 92, DType::f64, 2.0),
         random_normal({channels}, 93)});
    EXPECT_TRUE(result.ok) << shape_str(c.shape) << "\n" << result.report;
  }
}

TEST(GatedRmsnorm, FloatBackwardMatchesDouble) {
  const Shape shape = {3, 13, 20};
  Tensor y = random_normal(shape, 101), z = random_normal(shape, 102), weight = random_normal({20}, 103);
  Tensor seed = random_normal(shape, 104);
  std::vector<std::vector<double>> grads[2];
  for (int precision = 0; precision < 2; ++precision) {
    const DType dtype = precision == 0 ? DType::f64 : DType::f32;
    std::vector<Var> in = {leaf(y.to(dtype), true), leaf(z.to(dtype), true),
                           leaf(weight.to(dtype), true)};
    Var out = ops::gated_rmsnorm(in[0], in[1], in[2], 4);
    autograd::backward({out}, {seed.to(dtype)});
    for (const Var& v : in) grads[precision].push_back(v->grad.to_doubles());
  }
  for (size_t i = 0; i < 3; ++i) EXPECT_TRUE(all_close(grads[1][i], grads[0][i], 1e-4, 1e-5)) << "input " << i;
}

TEST(GatedRmsnorm, GateShapeMismatchNamesBothShapes) {
  Var y = leaf(random_normal({4, 6}, 1, DType::f32)), z = leaf(random_normal({4, 9}, 2, DType::f32));
  Var weight = leaf(random_normal({6}, 3, DType::f32));
  try {
    ops::gated_rmsnorm(y, z, weight, 2);
    FAIL() << "expected braid::Error";
  } catch (const Error& error) {
    EXPECT_NE(std::string(error.what()).find("[4, 6]"), std::string::npos) << error.what();
    EXPECT_NE(std::string(error.what()).find("[4, 9]"), std::string::npos) << error.what();
  }
}

TEST(GatedRmsnorm, ChannelsNotDivisibleByGroupsNamesBothNumbers) {
  Var y = leaf(random_normal({2, 10}, 1, DType::f32)), z = leaf(random_normal({2, 10}, 2, DType::f32));
  Var weight = leaf(random_normal({10}, 3, DType::f32));
  try {
    ops::gated_rmsnorm(y, z, weight, 3);
    FAIL() << "expected braid::Error";
  } catch (const Error& error) {
    EXPECT_NE(std::string(error.what()).find("10 channels"), std::string::npos) << error.what();
    EXPECT_NE(std::string(error.what()).find("3 groups"), std::string::npos) << error.what();
  }
}

TEST(GatedRmsnorm, WeightShapeMismatchNamesBothShapes) {
  Var y = leaf(random_normal({2, 10}, 1, DType::f32)), z = leaf(random_normal({2, 10}, 2, DType::f32));
  Var weight = leaf(random_normal({5}, 3, DType::f32));
  try {
    ops::gated_rmsnorm(y, z, weight, 2);
    FAIL() << "expected braid::Error";
  } catch (const Error& error) {
    EXPECT_NE(std::string(error.what()).find("[5]"), std::string::npos) << error.what();
    EXPECT_NE(std::string(error.what()).find("[10]"), std::string::npos) << error.what();
  }
}

}  // namespace
}  // namespace braid
