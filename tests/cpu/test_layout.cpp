// reshape, narrow, split and concat: values by index arithmetic, gradients through gradcheck.
#include "autograd/gradcheck.h"
#include "layers/ops/layout.h"
#include "tests/test_util.h"

namespace braid {
namespace {

using autograd::leaf;
using autograd::Var;

TEST(Layout, NarrowPicksTheSlice) {
  Tensor x = testing::random_normal({3, 5, 7}, 41);
  Var part = ops::narrow(leaf(x), 2, 2, 4);
  ASSERT_EQ(part->value.shape(), (Shape{3, 5, 4}));
  std::vector<double> all = x.to_doubles(), got = part->value.to_doubles();
  for (int a = 0; a < 3; ++a)
    for (int b = 0; b < 5; ++b)
      for (int c = 0; c < 4; ++c) EXPECT_EQ(got[size_t((a * 5 + b) * 4 + c)], all[size_t((a * 5 + b) * 7 + c + 2)]);
  EXPECT_THROW(ops::narrow(leaf(x), 2, 5, 3), Error);
}

TEST(Layout, ConcatJoinsInOrder) {
  Tensor a = testing::random_normal({2, 3}, 42), b = testing::random_normal({2, 5}, 43);
  Var joined = ops::concat({leaf(a), leaf(b)}, -1);
  ASSERT_EQ(joined->value.shape(), (Shape{2, 8}));
  std::vector<double> av = a.to_doubles(), bv = b.to_doubles(), got = joined->value.to_doubles();
  for (int r = 0; r < 2; ++r) {
    for (int c = 0; c < 3; ++c) EXPECT_EQ(got[size_t(r * 8 + c)], av[size_t(r * 3 + c)]);
    for (int c = 0; c < 5; ++c) EXPECT_EQ(got[size_t(r * 8 + 3 + c)], bv[size_t(r * 5 + c)]);
  }
}

TEST(Layout, ConcatNamesBothShapesOnMismatch) {
  try {
    ops::concat({leaf(testing::random_normal({2, 3}, 1)), leaf(testing::random_normal({3, 3}, 2))}, 1);
    FAIL() << "expected braid::Error";
  } catch (const Error& error) {
    EXPECT_NE(std::string(error.what()).find("[3, 3]"), std::string::npos) << error.what();
    EXPECT_NE(std::string(error.what()).find("[2, 3]"), std::string::npos) << error.what();
  }
}

TEST(Layout, SplitGivesConsecutiveParts) {
  Tensor x = testing::random_normal({3, 9}, 46);
  std::vector<Var> parts = ops::split(leaf(x), -1, {2, 0, 7});
  ASSERT_EQ(parts.size(), 3u);
  EXPECT_EQ(parts[1]->value.shape(), (Shape{3, 0}));
  std::vector<double> all = x.to_doubles(), first = parts[0]->value.to_doubles(), last = parts[2]->value.to_doubles();
  for (int r = 0; r < 3; ++r) {
    for (int c = 0; c < 2; ++c) EXPECT_EQ(first[size_t(r * 2 + c)], all[size_t(r * 9 + c)]);
    for (int c = 0; c < 7; ++c) EXPECT_EQ(last[size_t(r * 7 + c)], all[size_t(r * 9 + 2 + c)]);
  }
  EXPECT_THROW(ops::split(leaf(x), 1, {2, 6}), Error);  // parts must cover the dimension
}

TEST(Layout, Gradcheck) {
  auto split_and_join = [](const std::vector<Var>& in) {
    Var left = ops::narrow(in[0], 1, 0, 2), right = ops::narrow(in[0], 1, 1, 3);
    return ops::reshape(ops::concat({right, in[1], left}, 1), {-1});
  };
  auto result = autograd::gradcheck(split_and_join, {testing::random_normal({3, 4}, 44),
                                                     testing::random_normal({3, 2}, 45)});
  EXPECT_TRUE(result.ok) << result.report;
  // split, with one part unused: its slot of the gradient is zero.
  auto split_parts = [](const std::vector<Var>& in) {
    std::vector<Var> parts = ops::split(in[0], 0, {1, 2, 2});
    return ops::reshape(ops::concat({parts[2], parts[0]}, 0), {-1});
  };
  result = autograd::gradcheck(split_parts, {testing::random_normal({5, 3}, 47)});
  EXPECT_TRUE(result.ok) << result.report;
}

}  // namespace
}  // namespace braid
