// RoPE: inverse frequencies (the three Llama-3 bands) and the rotation against naive loops written
// here, gradients through gradcheck, position offsets, and the entry checks.
#include <cmath>
#include <numbers>

#include "autograd/gradcheck.h"
#include "autograd/tape.h"
#include "layers/ops/rope.h"
#include "tests/test_util.h"

namespace braid {
namespace {

using autograd::leaf;
using autograd::Var;
using testing::all_close;
using testing::random_normal;

// MODEL.md section 2, written out independently of the op.
double naive_inverse_frequency(const ops::RopeConfig& config, int64_t head_dim, int64_t i) {
  double base = 1.0 / std::pow(config.theta, double(2 * i) / double(head_dim));
  if (!config.llama3_scaling) return base;
  double wavelength = 2.0 * std::numbers::pi / base;
  double orig = double(config.original_context);
  if (wavelength < orig / config.high_freq_factor) return base;
  if (wavelength > orig / config.low_freq_factor) return base / config.factor;
  double s = (orig / wavelength - config.low_freq_factor) /
             (config.high_freq_factor - config.low_freq_factor);
  return (1.0 - s) * base / config.factor + s * base;
}

std::vector<double> naive_rope(const std::vector<double>& x, const Shape& shape,
                               const ops::RopeConfig& config, int64_t position_offset) {
  const int64_t B = shape[0], T = shape[1], H = shape[2], D = shape[3], half = D / 2;
  std::vector<double> out(x.size());
  for (int64_t b = 0; b < B; ++b)
    for (int64_t t = 0; t < T; ++t)
      for (int64_t h = 0; h < H; ++h)
        for (int64_t i = 0; i < half; ++i) {
          double angle = double(position_offset + t) * naive_inverse_frequency(config, D, i);
          int64_t lo = ((b * T + t) * H + h) * D + i, hi = lo + half;
          out[lo] = x[lo] * std::cos(angle) - x[hi] * std::sin(angle);
          out[hi] = x[hi] * std::cos(angle) + x[lo] * std::sin(angle);
        }
  return out;
}

ops::RopeConfig plain(double theta) { return {theta, false}; }

TEST(Rope, ForwardMatchesNaiveLoop) {
  struct Case {
    Shape shape;
    ops::RopeConfig config;
    int64_t offset;
  };
  for (const Case& c : {Case{{2, 5, 3, 8}, plain(10000), 0}, Case{{1, 4, 2, 128}, {}, 8000},
                        Case{{2, 3, 1, 6}, {}, 3}, Case{{1, 7, 3, 72}, {}, 20000}}) {
    Tensor x = random_normal(c.shape, 30 + c.shape[3], DType::f32);
    Var out = ops::rope(leaf(x), c.config, c.offset);
    EXPECT_TRUE(all_close(out->value, naive_rope(x.to_doubles(), c.shape, c.config, c.offset), 1e-5,
                          1e-6))
        << shape_str(c.shape) << " offset " << c.offset;
  }
}

TEST(Rope, InverseFrequencyBands) {
  const ops::RopeConfig config;  // theta 500000, factor 32, low 1, high 4, original context 8192
  const int64_t head_dim = 128;
  std::vector<double> frequencies = ops::rope_inverse_frequencies(config, head_dim);
  ASSERT_EQ(frequencies.size(), 64u);
  // Highest frequency (wavelength 2 pi < 2048): unchanged.
  EXPECT_EQ(frequencies[0], 1.0);
  // Lowest frequency (wavelength ~2.5e6 > 8192): divided by the factor.
  double lowest = std::pow(500000.0, -126.0 / 128.0);
  EXPECT_NEAR(frequencies[63], lowest / 32, 1e-15 * lowest);
  // Every frequency against the formula; the middle band must be populated and blended.
  int64_t blended = 0;
  for (int64_t i = 0; i < 64; ++i) {
    double expected = naive_inverse_frequency(config, head_dim, i);
    EXPECT_NEAR(frequencies[i], expected, 1e-13 * expected) << "i " << i;
    double base = std::pow(500000.0, -2.0 * double(i) / 128.0);
    double wavelength = 2 * std::numbers::pi / base;
    if (wavelength > 2048 && wavelength < 8192) {
      ++blended;
      EXPECT_GT(frequencies[i], base / 32) << "i " << i;
      EXPECT_LT(frequencies[i], base) << "i " << i;
    }
  }
  EXPECT_GT(blended, 0);
  // A hand-computed blend: i = 32 has wavelength 2 pi sqrt(500000) ~ 4442.9, s = (8192/L - 1) / 3.
  double base = 1.0 / std::sqrt(500000.0);
  double s = (8192 * base / (2 * std::numbers::pi) - 1) / 3;
  EXPECT_NEAR(frequencies[32], (1 - s) * base / 32 + s * base, 1e-15);
  // Without scaling: theta^(-2i/D).
  std::vector<double> unscaled = ops::rope_inverse_frequencies(plain(10000), 6);
  for (int64_t i = 0; i < 3; ++i)
    EXPECT_NEAR(unscaled[i], std::pow(10000.0, -double(i) / 3), 1e-15) << "i " << i;
}

TEST(Rope, Gradcheck) {
  struct Case {
    Shape shape;
    ops::RopeConfig config;
    int64_t offset;
  };
  for (const Case& c : {Case{{1, 5, 2, 8}, {}, 7}, Case{{2, 3, 3, 4}, plain(10000), 0}}) {
    auto result = autograd::gradcheck(
        [&](const std::vector<Var>& in) { return ops::rope(in[0], c.config, c.offset); },
        {random_normal(c.shape, 40 + c.offset)});
    EXPECT_TRUE(result.ok) << shape_str(c.shape) << ": " << result.report;
  }
}

TEST(Rope, PositionOffsetMatchesRowOfFullSequence) {
  const Shape shape{1, 20, 2, 8};
  Tensor x = random_normal(shape, 50, DType::f32);
  Var full = ops::rope(leaf(x), {}, 0);
  for (int64_t p : {0, 7, 19}) {
    Var one = ops::rope(leaf(x.narrow(1, p, 1).contiguous()), {}, p);
    EXPECT_TRUE(all_close(one->value, full->value.narrow(1, p, 1).to_doubles(), 0, 0)) << "p " << p;
  }
}

TEST(Rope, OddHeadDimRejected) {
  try {
    ops::rope(leaf(random_normal({1, 2, 3, 5}, 60, DType::f32)));
    FAIL() << "expected braid::Error";
  } catch (const Error& error) {
    EXPECT_NE(std::string(error.what()).find("[1, 2, 3, 5]"), std::string::npos) << error.what();
  }
  EXPECT_THROW(ops::rope_inverse_frequencies({}, 7), Error);
}

TEST(Rope, BadInputsRejected) {
  try {
    ops::rope(leaf(random_normal({2, 3, 8}, 61, DType::f32)));
    FAIL() << "expected braid::Error";
  } catch (const Error& error) {
    EXPECT_NE(std::string(error.what()).find("[2, 3, 8]"), std::string::npos) << error.what();
  }
  try {
    ops::rope(leaf(random_normal({1, 2, 1, 8}, 62, DType::f32)), {}, -3);
    FAIL() << "expected braid::Error";
  } catch (const Error& error) {
    EXPECT_NE(std::string(error.what()).find("-3"), std::string::npos) << error.what();
  }
  ops::RopeConfig inverted_bands;
  inverted_bands.high_freq_factor = 1;
  EXPECT_THROW(ops::rope_inverse_frequencies(inverted_bands, 8), Error);
}

}  // namespace
}  // namespace braid
