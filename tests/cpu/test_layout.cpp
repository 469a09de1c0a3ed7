// reshape, narrow, split and concat: values by index arithmetic, gradients through gradcheck; row
// views (row_stride, rows_in_place) by the strides and addresses they must have.
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

TEST(Layout, RowStrideOfContiguousAndNarrowedRows) {
  Tensor x = testing::random_normal({3, 1, 10}, 48);
  EXPECT_EQ(ops::row_stride(x), 10);
  EXPECT_EQ(ops::row_stride(x.narrow(2, 4, 3)), 10);  // a slice of each row: rows stay 10 apart
  EXPECT_EQ(ops::row_stride(x.narrow(0, 1, 1).narrow(2, 4, 3)), 3);  // one row: its own width
  Tensor y = testing::random_normal({4, 5, 6}, 49);
  EXPECT_EQ(ops::row_stride(y.narrow(2, 1, 2)), 6);  // rows (4 x 5) still one run of stride 6
  EXPECT_EQ(ops::row_stride(y.narrow(1, 0, 3)), -1);  // rows 0..2 of each block of 5: two strides
  EXPECT_EQ(ops::row_stride(y.select(2, 3)), -1);     // last dimension not unit-stride
}

TEST(Layout, RowsInPlaceKeepsAlignedRowsAndCopiesTheRest) {
  Tensor x = testing::random_normal({4, 1, 12}, 50, DType::f32);  // rows of 48 bytes
  Tensor aligned = x.narrow(2, 4, 5);                             // starts 16 bytes in
  Tensor kept = ops::rows_in_place(aligned);
  EXPECT_EQ(kept.raw_data(), aligned.raw_data());
  EXPECT_EQ(kept.strides(), aligned.strides());
  for (Tensor view : {x.narrow(2, 1, 5), testing::random_normal({4, 10}, 51, DType::f32).narrow(1, 0, 3)}) {
    // Misaligned start (4 bytes in), or rows 40 bytes apart: a contiguous copy of the same values.
    Tensor copied = ops::rows_in_place(view);
    EXPECT_TRUE(copied.is_contiguous());
    EXPECT_NE(copied.raw_data(), view.raw_data());
    EXPECT_EQ(copied.to_doubles(), view.to_doubles());
    // A kernel reading element by element (alignment 1) reads the same rows in place.
    EXPECT_EQ(ops::rows_in_place(view, 1).raw_data(), view.raw_data());
  }
  // A view whose rows do not step evenly (a slice of the middle dimension) is copied whatever the
  // alignment.
  Tensor uneven = testing::random_normal({4, 3, 6}, 53, DType::f32).narrow(1, 0, 2);
  EXPECT_TRUE(ops::rows_in_place(uneven, 1).is_contiguous());
  Tensor contiguous = testing::random_normal({3, 7}, 52, DType::f32);
  EXPECT_EQ(ops::rows_in_place(contiguous).raw_data(), contiguous.raw_data());
}

}  // namespace
}  // namespace braid
