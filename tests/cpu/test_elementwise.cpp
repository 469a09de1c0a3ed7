// Elementwise ops, sum/mean and the per-channel scale: forward against naive double loops,
// gradients through gradcheck, bad-input messages.
#include <cmath>
#include <functional>

#include "autograd/gradcheck.h"
#include "autograd/tape.h"
#include "layers/ops/elementwise.h"
#include "tests/test_util.h"

namespace braid {
namespace {

using autograd::leaf;
using autograd::Var;
using testing::all_close;
using testing::error_of;
using testing::random_normal;

const Shape kShapes[] = {Shape{3, 7}, Shape{2, 5, 33}};

struct BinaryCase {
  const char* name;
  Var (*op)(const Var&, const Var&);
  double (*naive)(double, double);
};

const BinaryCase kBinary[] = {
    {"add", ops::add, [](double a, double b) { return a + b; }},
    {"sub", ops::sub, [](double a, double b) { return a - b; }},
    {"mul", ops::mul, [](double a, double b) { return a * b; }},
};

TEST(Elementwise, BinaryOpsMatchNaiveLoop) {
  uint64_t seed = 1000;
  for (const BinaryCase& c : kBinary)
    for (const Shape& shape : kShapes) {
      Tensor a = random_normal(shape, seed++, DType::f32),
             b = random_normal(shape, seed++, DType::f32);
      std::vector<double> as = a.to_doubles(), bs = b.to_doubles(), expected(as.size());
      for (size_t i = 0; i < as.size(); ++i) expected[i] = c.naive(as[i], bs[i]);
      EXPECT_TRUE(all_close(c.op(leaf(a), leaf(b))->value, expected, 1e-6, 1e-7)) << c.name;
    }
}

TEST(Elementwise, BinaryOpsGradcheck) {
  uint64_t seed = 1100;
  for (const BinaryCase& c : kBinary)
    for (const Shape& shape : {Shape{4, 3}, Shape{2, 3, 5}}) {
      auto result =
          autograd::gradcheck([&](const std::vector<Var>& in) { return c.op(in[0], in[1]); },
                              {random_normal(shape, seed++), random_normal(shape, seed++)});
      EXPECT_TRUE(result.ok) << c.name << "\n" << result.report;
    }
}

TEST(Elementwise, SameVariableOnBothSidesAccumulates) {
  // d(a * a)/da = 2a and d(a + a)/da = 2: both gradients land on one variable.
  Tensor a = random_normal({5}, 1150);
  Var va = leaf(a, true);
  autograd::backward(ops::sum(ops::add(ops::mul(va, va), va)));
  std::vector<double> expected = a.to_doubles();
  for (double& value : expected) value = 2 * value + 1;
  EXPECT_TRUE(all_close(va->grad, expected, 1e-14, 1e-14));
}

TEST(Elementwise, ScaleSumMeanMatchNaiveLoop) {
  uint64_t seed = 1200;
  for (const Shape& shape : {Shape{3, 7}, Shape{2, 5, 33}, Shape{9001}}) {
    Tensor a = random_normal(shape, seed++, DType::f32);
    std::vector<double> as = a.to_doubles(), scaled(as.size());
    double total = 0;
    for (size_t i = 0; i < as.size(); ++i) {
      scaled[i] = -2.5 * as[i];
      total += as[i];
    }
    EXPECT_TRUE(all_close(ops::scale(leaf(a), -2.5)->value, scaled, 1e-6, 1e-7));
    Var sum = ops::sum(leaf(a)), mean = ops::mean(leaf(a));
    EXPECT_EQ(sum->value.shape(), Shape{1});
    EXPECT_TRUE(all_close(sum->value, {total}, 1e-6, 1e-6));
    EXPECT_TRUE(all_close(mean->value, {total / double(as.size())}, 1e-6, 1e-7));
  }
}

TEST(Elementwise, UnaryOpsGradcheck) {
  const std::pair<const char*, std::function<Var(const Var&)>> unary[] = {
      {"scale", [](const Var& a) { return ops::scale(a, 0.3); }},
      {"sum", [](const Var& a) { return ops::sum(a); }},
      {"mean", [](const Var& a) { return ops::mean(a); }},
  };
  uint64_t seed = 1300;
  for (const auto& [name, op] : unary)
    for (const Shape& shape : {Shape{4, 3}, Shape{2, 3, 5}}) {
      auto result = autograd::gradcheck([&](const std::vector<Var>& in) { return op(in[0]); },
                                        {random_normal(shape, seed++)});
      EXPECT_TRUE(result.ok) << name << "\n" << result.report;
    }
}

TEST(MulBroadcastLast, ForwardMatchesNaiveLoop) {
  uint64_t seed = 1400;
  for (const Shape& shape : {Shape{3, 7}, Shape{2, 5, 133}, Shape{4}}) {
    const int64_t channels = shape.back();
    Tensor x = random_normal(shape, seed++, DType::f32),
           v = random_normal({channels}, seed++, DType::f32);
    std::vector<double> xs = x.to_doubles(), vs = v.to_doubles(), expected(xs.size());
    for (size_t i = 0; i < xs.size(); ++i) expected[i] = xs[i] * vs[i % size_t(channels)];
    EXPECT_TRUE(all_close(ops::mul_broadcast_last(leaf(x), leaf(v))->value, expected, 1e-6, 1e-7));
  }
}

TEST(MulBroadcastLast, Gradcheck) {
  uint64_t seed = 1500;
  for (const Shape& shape : {Shape{4, 3}, Shape{2, 3, 5}, Shape{3, 130}}) {
    auto result = autograd::gradcheck(
        [](const std::vector<Var>& in) { return ops::mul_broadcast_last(in[0], in[1]); },
        {random_normal(shape, seed++), random_normal({shape.back()}, seed++)});
    EXPECT_TRUE(result.ok) << result.report;
  }
}

TEST(Elementwise, BadInputsNameBothShapes) {
  Var a = leaf(random_normal({2, 3}, 1, DType::f32)),
      b = leaf(random_normal({3, 2}, 2, DType::f32));
  for (const BinaryCase& c : kBinary) {
    std::string message = error_of([&] { c.op(a, b); });
    EXPECT_PRED_FORMAT2(::testing::IsSubstring,
                        str(c.name, ": a has shape [2, 3] but b has shape [3, 2]"), message);
  }
  std::string message = error_of([&] {
    ops::add(a, leaf(random_normal({2, 3}, 3, DType::f64)));
  });
  EXPECT_PRED_FORMAT2(::testing::IsSubstring, "add: a is f32 but b is f64", message);
  message =
      error_of([&] { ops::mul_broadcast_last(a, leaf(random_normal({2}, 4, DType::f32))); });
  EXPECT_PRED_FORMAT2(::testing::IsSubstring,
                      "mul_broadcast_last: x has shape [2, 3] but v has shape [2]", message);
  message = error_of([&] { ops::mean(leaf(Tensor::zeros({0, 3}, DType::f32))); });
  EXPECT_PRED_FORMAT2(::testing::IsSubstring, "mean: a has shape [0, 3]", message);
}

}  // namespace
}  // namespace braid
