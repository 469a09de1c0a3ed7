// GroupNorm: forward against a naive double loop, gradients through gradcheck.
#include <cmath>

#include "autograd/gradcheck.h"
#include "autograd/tape.h"
#include "layers/ops/group_norm.h"
#include "tests/test_util.h"

namespace braid {
namespace {

using autograd::leaf;
using autograd::Var;
using testing::all_close;
using testing::random_normal;

// x viewed as (rows, groups * group_size); biased variance per row and group.
std::vector<double> naive_group_norm(const std::vector<double>& x, const std::vector<double>& weight,
                                     const std::vector<double>& bias, int64_t groups, double eps) {
  const size_t channels = weight.size(), group_size = channels / size_t(groups);
  std::vector<double> out(x.size());
  for (size_t row = 0; row < x.size() / channels; ++row) {
    for (size_t g = 0; g < size_t(groups); ++g) {
      const size_t first = row * channels + g * group_size;
      double mean = 0, var = 0;
      for (size_t k = 0; k < group_size; ++k) mean += x[first + k] / double(group_size);
      for (size_t k = 0; k < group_size; ++k)
        var += (x[first + k] - mean) * (x[first + k] - mean) / double(group_size);
      for (size_t k = 0; k < group_size; ++k) {
        const size_t c = g * group_size + k;
        out[first + k] = (x[first + k] - mean) / std::sqrt(var + eps) * weight[c] + bias[c];
      }
    }
  }
  return out;
}

struct Case {
  Shape x_shape;
  int64_t groups;
};

TEST(GroupNorm, ForwardMatchesNaiveLoop) {
  // (37 rows, 3 groups of 5), (2*9 rows, 5 groups of 3), a single group, and one channel per group.
  const Case cases[] = {{{37, 15}, 3}, {{2, 9, 15}, 5}, {{4, 7}, 1}, {{3, 6}, 6}};
  for (const Case& c : cases) {
    const int64_t channels = c.x_shape.back();
    for (DType dtype : {DType::f32, DType::f64}) {
      Tensor x = random_normal(c.x_shape, 31, dtype, 2.0);
      Tensor weight = random_normal({channels}, 32, dtype), bias = random_normal({channels}, 33, dtype);
      Var out = ops::group_norm(leaf(x), leaf(weight), leaf(bias), c.groups);
      const double tol = dtype == DType::f32 ? 1e-5 : 1e-12;
      EXPECT_EQ(out->value.shape(), c.x_shape);
      EXPECT_TRUE(all_close(out->value, naive_group_norm(x.to_doubles(), weight.to_doubles(),
                                                         bias.to_doubles(), c.groups, 1e-5),
                            tol, tol))
          << shape_str(c.x_shape) << " groups " << c.groups << " " << dtype_name(dtype);
    }
  }
}

TEST(GroupNorm, EpsIsUsed) {
  // A group of equal values has variance 0: the output is bias exactly, and eps keeps it finite.
  Tensor x = Tensor::from_values({2, 2, 2, 1, 5, -3}, {1, 6}, DType::f64);
  Tensor weight = random_normal({6}, 41), bias = random_normal({6}, 42);
  Var out = ops::group_norm(leaf(x), leaf(weight), leaf(bias), 2, 0.25);
  EXPECT_TRUE(all_close(out->value, naive_group_norm(x.to_doubles(), weight.to_doubles(),
                                                     bias.to_doubles(), 2, 0.25),
                        1e-12, 1e-12));
}

TEST(GroupNorm, Gradcheck) {
  const Case cases[] = {{{4, 15}, 3}, {{2, 3, 12}, 4}};
  for (const Case& c : cases) {
    const int64_t channels = c.x_shape.back();
    const int64_t groups = c.groups;
    auto result = autograd::gradcheck(
        [groups](const std::vector<Var>& in) { return ops::group_norm(in[0], in[1], in[2], groups); },
        {random_normal(c.x_shape, 51), random_normal({channels}, 52), random_normal({channels}, 53)});
    EXPECT_TRUE(result.ok) << shape_str(c.x_shape) << "\n" << result.report;
  }
}

TEST(GroupNorm, FloatBackwardMatchesDouble) {
  const Shape shape = {2, 17, 21};
  Tensor x = random_normal(shape, 61), weight = random_normal({21}, 62), bias = random_normal({21}, 63);
  Tensor seed = random_normal(shape, 64);
  std::vector<std::vector<double>> grads[2];
  for (int precision = 0; precision < 2; ++precision) {
    const DType dtype = precision == 0 ? DType::f64 : DType::f32;
    std::vector<Var> in = {leaf(x.to(dtype), true), leaf(weight.to(dtype), true),
                           leaf(bias.to(dtype), true)};
    Var out = ops::group_norm(in[0], in[1], in[2], 7);
    autograd::backward({out}, {seed.to(dtype)});
    for (const Var& v : in) grads[precision].push_back(v->grad.to_doubles());
  }
  for (size_t i = 0; i < 3; ++i) EXPECT_TRUE(all_close(grads[1][i], grads[0][i], 1e-4, 1e-5)) << "input " << i;
}

TEST(GroupNorm, ChannelsNotDivisibleByGroupsNamesBothNumbers) {
  Var x = leaf(random_normal({3, 14}, 1, DType::f32));
  Var weight = leaf(random_normal({14}, 2, DType::f32)), bias = leaf(random_normal({14}, 3, DType::f32));
  try {
    ops::group_norm(x, weight, bias, 4);
    FAIL() << "expected braid::Error";
  } catch (const Error& error) {
    EXPECT_NE(std::string(error.what()).find("14 channels"), std::string::npos) << error.what();
    EXPECT_NE(std::string(error.what()).find("4 groups"), std::string::npos) << error.what();
  }
}

TEST(GroupNorm, WeightShapeMismatchNamesBothShapes) {
  Var x = leaf(random_normal({3, 15}, 1, DType::f32));
  Var weight = leaf(random_normal({12}, 2, DType::f32)), bias = leaf(random_normal({15}, 3, DType::f32));
  try {
    ops::group_norm(x, weight, bias, 3);
    FAIL() << "expected braid::Error";
  } catch (const Error& error) {
    EXPECT_NE(std::string(error.what()).find("[12]"), std::string::npos) << error.what();
    EXPECT_NE(std::string(error.what()).find("[15]"), std::string::npos) << error.what();
  }
}

}  // namespace
}  // namespace braid
