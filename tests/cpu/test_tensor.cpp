// Tensor views, copies and dtype conversions on the host.
#include "runtime/tensor.h"
#include "tests/test_util.h"

namespace braid {
namespace {

std::vector<double> iota(int64_t n) {
  std::vector<double> v(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) v[size_t(i)] = double(i) * 0.5 - 3;
  return v;
}

TEST(Tensor, ShapeStridesAndDescribe) {
  Tensor t = Tensor::empty({2, 3, 4}, DType::bf16);
  EXPECT_EQ(t.strides(), (Shape{12, 4, 1}));
  EXPECT_EQ(t.numel(), 24);
  EXPECT_EQ(t.nbytes(), 48u);
  EXPECT_EQ(t.size(-1), 4);
  EXPECT_TRUE(t.is_contiguous());
  EXPECT_EQ(t.describe(), "bf16[2, 3, 4] on cpu");
  EXPECT_THROW(t.size(3), Error);
}

TEST(Tensor, NarrowIsAViewSharingStorage) {
  Tensor t = Tensor::from_values(iota(24), {4, 6});
  Tensor columns = t.narrow(1, 2, 3);
  EXPECT_EQ(columns.shape(), (Shape{4, 3}));
  EXPECT_FALSE(columns.is_contiguous());
  EXPECT_EQ(columns.storage(), t.storage());
  std::vector<double> expected;
  for (int r = 0; r < 4; ++r)
    for (int c = 2; c < 5; ++c) expected.push_back(double(r * 6 + c) * 0.5 - 3);
  EXPECT_EQ(columns.to_doubles(), expected);
  columns.fill_(7.0);  // writes through to the parent
  EXPECT_EQ(t.to_doubles()[2], 7.0);
  EXPECT_EQ(t.to_doubles()[1], -2.5);
  EXPECT_THROW(t.narrow(1, 4, 3), Error);
}

TEST(Tensor, ReshapeOfContiguousOnly) {
  Tensor t = Tensor::from_values(iota(24), {2, 3, 4});
  Tensor flat = t.reshape({-1, 4});
  EXPECT_EQ(flat.shape(), (Shape{6, 4}));
  EXPECT_EQ(flat.storage(), t.storage());
  EXPECT_EQ(flat.to_doubles(), t.to_doubles());
  EXPECT_THROW(t.reshape({5, -1}), Error);
  EXPECT_THROW(t.narrow(2, 0, 2).reshape({12}), Error);
  EXPECT_EQ(t.narrow(2, 0, 2).contiguous().reshape({12}).numel(), 12);
}

TEST(Tensor, SelectDropsADimension) {
  Tensor t = Tensor::from_values(iota(24), {2, 3, 4});
  Tensor row = t.select(1, 2);
  EXPECT_EQ(row.shape(), (Shape{2, 4}));
  EXPECT_EQ(row.to_doubles()[4], double(12 + 8) * 0.5 - 3);
}

TEST(Tensor, CastsRoundTrip) {
  std::vector<double> values = {1.5, -2.25, 1e6, 3.0, -7.0, 65504.0};
  Tensor t = Tensor::from_values(values, {6}, DType::f32);
  EXPECT_EQ(t.to(DType::f64).to_doubles(), values);
  EXPECT_EQ(t.to(DType::i32).to_doubles(), (std::vector<double>{1, -2, 1e6, 3, -7, 65504}));
  EXPECT_EQ(t.to(DType::bf16).to_doubles(), (std::vector<double>{1.5, -2.25, 999424, 3, -7, 65536}));
  EXPECT_EQ(Tensor::from_values({4294967295.0}, {1}, DType::u32).to(DType::i64).to_doubles()[0], 4294967295.0);
}

TEST(Tensor, Bf16RoundsToNearestEven) {
  EXPECT_EQ(float(bf16(1.0f + 1.0f / 256)), 1.0f);                  // tie, even stays
  EXPECT_EQ(float(bf16(1.0f + 3.0f / 256)), 1.0f + 4.0f / 256);     // tie, rounds up to even
  EXPECT_EQ(float(bf16(1.0f + 1.5f / 256)), 1.0f + 2.0f / 256);     // above the tie
  EXPECT_TRUE(std::isnan(float(bf16(std::nanf("")))));
}

TEST(Tensor, StridedCopyBetweenViews) {
  Tensor source = Tensor::from_values(iota(12), {3, 4});
  Tensor target = Tensor::zeros({4, 6}, DType::f64);
  target.narrow(0, 1, 3).narrow(1, 2, 4).copy_from(source);
  std::vector<double> got = target.to_doubles();
  EXPECT_EQ(got[0], 0);
  EXPECT_EQ(got[6 + 2], -3);
  EXPECT_EQ(got[3 * 6 + 5], 2.5);
  EXPECT_THROW(target.copy_from(source), Error);
}

TEST(Tensor, CudaWithoutCudaFailsClearly) {
  if (cuda_available()) GTEST_SKIP() << "a CUDA device is present; this checks the CPU-only path";
  try {
    Tensor::empty({2}, DType::f32, Device::cuda(0));
    FAIL() << "expected braid::Error";
  } catch (const Error& error) {
    EXPECT_NE(std::string(error.what()).find("cuda:0"), std::string::npos) << error.what();
  }
}

TEST(Device, Parse) {
  EXPECT_TRUE(Device::parse("cpu").is_cpu());
  EXPECT_EQ(Device::parse("cuda:3").index, 3);
  EXPECT_EQ(Device::parse("cuda").to_string(), "cuda:0");
  EXPECT_THROW(Device::parse("gpu"), Error);
  EXPECT_THROW(Device::parse("cuda:x"), Error);
}

}  // namespace
}  // namespace braid
