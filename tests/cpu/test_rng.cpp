// Philox 4x32-10 against the Random123 known-answer vectors, and the statistics of our fills.
#include <cmath>

#include "runtime/philox.h"
#include "runtime/random_transform.h"
#include "runtime/rng.h"
#include "tests/test_util.h"

namespace braid {
namespace {

void expect_block(philox::Block counter, uint32_t key0, uint32_t key1, philox::Block expected) {
  philox::Block out = philox::philox4x32_10(counter, key0, key1);
  for (int i = 0; i < 4; ++i) EXPECT_EQ(out.v[i], expected.v[i]) << "word " << i;
}

// Random123's published kat_vectors for philox4x32 with 10 rounds.
TEST(Philox, Random123KnownAnswers) {
  expect_block({{0, 0, 0, 0}}, 0, 0, {{0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8}});
  expect_block({{0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff}}, 0xffffffff, 0xffffffff,
               {{0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd}});
  expect_block({{0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344}}, 0xa4093822, 0x299f31d0,
               {{0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1}});
}

// The stream layout: position p is lane p % 4 of block p / 4, seed split into the two key words.
TEST(Philox, StreamLayoutAndUniformTransform) {
  const uint64_t seed = 0x0000000500000007ull;
  philox::Block block = philox::philox4x32_10({{3, 0, 0, 0}}, 7, 5);
  Tensor values = Tensor::empty({4}, DType::f64);
  fill_uniform(values, seed, 12);  // positions 12..15 = block 3
  std::vector<double> got = values.to_doubles();
  for (int lane = 0; lane < 4; ++lane)
    EXPECT_EQ(got[size_t(lane)], ((block.v[lane] >> 8) + 0.5) / 16777216.0) << "lane " << lane;
}

TEST(Philox, OffsetsShiftTheStream) {
  Tensor whole = Tensor::empty({64}, DType::f32), tail = Tensor::empty({40}, DType::f32);
  fill_normal(whole, 99, 0);
  fill_normal(tail, 99, 24);
  std::vector<double> a = whole.to_doubles(), b = tail.to_doubles();
  for (size_t i = 0; i < b.size(); ++i) EXPECT_EQ(a[i + 24], b[i]);
}

TEST(Philox, UniformAndNormalMoments) {
  Tensor uniform = Tensor::empty({200000}, DType::f32), normal = Tensor::empty({200000}, DType::f32);
  fill_uniform(uniform, 1, 0, -2.0, 4.0);
  fill_normal(normal, 2, 0, 0.5, 3.0);
  auto moments = [](const std::vector<double>& v) {
    double mean = 0, var = 0;
    for (double x : v) mean += x;
    mean /= double(v.size());
    for (double x : v) var += (x - mean) * (x - mean);
    return std::pair{mean, var / double(v.size())};
  };
  std::vector<double> u = uniform.to_doubles();
  for (double x : u) ASSERT_TRUE(x > -2.0 && x < 4.0) << x;
  auto [u_mean, u_var] = moments(u);
  EXPECT_NEAR(u_mean, 1.0, 0.02);
  EXPECT_NEAR(u_var, 3.0, 0.03);  // (b - a)^2 / 12
  auto [n_mean, n_var] = moments(normal.to_doubles());
  EXPECT_NEAR(n_mean, 0.5, 0.03);
  EXPECT_NEAR(n_var, 9.0, 0.1);
}

TEST(Philox, GeneratorHandsOutDisjointRanges) {
  Generator generator(5);
  Tensor a = Tensor::empty({5}, DType::f32), b = Tensor::empty({3}, DType::f32);
  generator.uniform(a);
  generator.uniform(b);
  EXPECT_EQ(generator.offset(), 12u);  // 5 rounded to 8, then 3 rounded to 4
  Tensor expected = Tensor::empty({3}, DType::f32);
  fill_uniform(expected, 5, 8);
  EXPECT_EQ(b.to_doubles(), expected.to_doubles());
}

TEST(Philox, FillRejectsIntegerTensors) {
  Tensor ids = Tensor::empty({4}, DType::i32);
  EXPECT_THROW(fill_uniform(ids, 1, 0), Error);
}

}  // namespace
}  // namespace braid
