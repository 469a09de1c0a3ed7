// Causal depthwise conv1d (+ SiLU): forward and final state against a naive double loop, chunked
// runs against one run, gradients of both outputs through gradcheck.
#include <cmath>

#include "autograd/gradcheck.h"
#include "autograd/tape.h"
#include "layers/ops/conv1d.h"
#include "tests/test_util.h"

namespace braid {
namespace {

using autograd::leaf;
using autograd::Var;
using testing::all_close;
using testing::random_normal;

struct Dims {
  int64_t batch, length, channels, width;
};

struct NaiveConv {
  std::vector<double> out, final_state;
};

// x (B, T, C), weight (C, W), bias (C), initial_state (B, C, W-1) or empty for zeros.
NaiveConv naive_conv1d(const std::vector<double>& x, const std::vector<double>& weight,
                       const std::vector<double>& bias, const std::vector<double>& initial_state,
                       Dims d, bool silu) {
  const int64_t state = d.width - 1;
  NaiveConv result{std::vector<double>(size_t(d.batch * d.length * d.channels)),
                   std::vector<double>(size_t(d.batch * d.channels * state))};
  for (int64_t b = 0; b < d.batch; ++b) {
    for (int64_t c = 0; c < d.channels; ++c) {
      // The sequence of this channel with its W-1 inputs before t = 0 in front.
      std::vector<double> padded(size_t(state + d.length), 0.0);
      for (int64_t m = 0; m < state && !initial_state.empty(); ++m)
        padded[size_t(m)] = initial_state[size_t((b * d.channels + c) * state + m)];
      for (int64_t t = 0; t < d.length; ++t)
        padded[size_t(state + t)] = x[size_t((b * d.length + t) * d.channels + c)];
      for (int64_t t = 0; t < d.length; ++t) {
        double v = bias[size_t(c)];
        for (int64_t k = 0; k < d.width; ++k) v += weight[size_t(c * d.width + k)] * padded[size_t(t + k)];
        result.out[size_t((b * d.length + t) * d.channels + c)] = silu ? v / (1.0 + std::exp(-v)) : v;
      }
      for (int64_t m = 0; m < state; ++m)
        result.final_state[size_t((b * d.channels + c) * state + m)] = padded[size_t(d.length + m)];
    }
  }
  return result;
}

struct Case {
  Dims dims;
  bool with_initial_state;
  bool silu;
};

TEST(Conv1d, ForwardMatchesNaiveLoop) {
  const Case cases[] = {
      {{2, 37, 7, 4}, false, true}, {{2, 37, 7, 4}, true, true},
      {{3, 2, 5, 4}, true, true},   // T < W-1: the final state reaches into the initial state
      {{1, 2, 3, 4}, false, true},  // ... or into the zeros before t = 0
      {{2, 9, 6, 3}, true, false},  {{2, 5, 3, 1}, false, true},
  };
  for (const Case& c : cases) {
    const Dims d = c.dims;
    for (DType dtype : {DType::f32, DType::f64}) {
      Tensor x = random_normal({d.batch, d.length, d.channels}, 111, dtype);
      Tensor weight = random_normal({d.channels, d.width}, 112, dtype, 0.7);
      Tensor bias = random_normal({d.channels}, 113, dtype);
      Tensor init = random_normal({d.batch, d.channels, d.width - 1}, 114, dtype);
      ops::Conv1dOutput result = ops::conv1d(leaf(x), leaf(weight), leaf(bias),
                                             c.with_initial_state ? leaf(init) : nullptr, c.silu);
      NaiveConv expected =
          naive_conv1d(x.to_doubles(), weight.to_doubles(), bias.to_doubles(),
                       c.with_initial_state ? init.to_doubles() : std::vector<double>{}, d, c.silu);
      const double tol = dtype == DType::f32 ? 1e-5 : 1e-12;
      const std::string label = str("B ", d.batch, " T ", d.length, " C ", d.channels, " W ", d.width,
                                    c.with_initial_state ? " with" : " without", " initial state, ",
                                    dtype_name(dtype));
      EXPECT_EQ(result.out->value.shape(), (Shape{d.batch, d.length, d.channels})) << label;
      EXPECT_EQ(result.final_state->value.shape(), (Shape{d.batch, d.channels, d.width - 1})) << label;
      EXPECT_TRUE(all_close(result.out->value, expected.out, tol, tol)) << label;
      EXPECT_TRUE(all_close(result.final_state->value, expected.final_state, 0, 0)) << label;
    }
  }
}

TEST(Conv1d, ChunkedRunsMatchOneRun) {
  // Feeding each chunk's final state into the next chunk reproduces the whole sequence, including
  // chunks shorter than W-1.
  const int64_t batch = 2, length = 23, channels = 5, width = 4;
  Tensor x = random_normal({batch, length, channels}, 121, DType::f32);
  Var weight = leaf(random_normal({channels, width}, 122, DType::f32));
  Var bias = leaf(random_normal({channels}, 123, DType::f32));
  Var init = leaf(random_normal({batch, channels, width - 1}, 124, DType::f32));
  ops::Conv1dOutput whole = ops::conv1d(leaf(x), weight, bias, init);
  Var state = init;
  int64_t start = 0;
  for (int64_t chunk : {9, 1, 2, 11}) {
    ops::Conv1dOutput part = ops::conv1d(leaf(x.narrow(1, start, chunk).contiguous()), weight, bias, state);
    EXPECT_TRUE(all_close(part.out->value, whole.out->value.narrow(1, start, chunk).to_doubles(), 0, 0))
        << "chunk at " << start;
    state = part.final_state;
    start += chunk;
  }
  EXPECT_TRUE(all_close(state->value, whole.final_state->value.to_doubles(), 0, 0));
}

// Gradcheck of `out` (or of `final_state`) with respect to every input.
void expect_gradcheck(const Case& c, bool check_final_state, uint64_t seed) {
  const Dims d = c.dims;
  std::vector<Tensor> inputs = {random_normal({d.batch, d.length, d.channels}, seed),
                                random_normal({d.channels, d.width}, seed + 1, DType::f64, 0.7),
                                random_normal({d.channels}, seed + 2)};
  if (c.with_initial_state) inputs.push_back(random_normal({d.batch, d.channels, d.width - 1}, seed + 3));
  const bool silu = c.silu;
  auto result = autograd::gradcheck(
      [silu, check_final_state](const std::vector<Var>& in) {
        ops::Conv1dOutput out = ops::conv1d(in[0], in[1], in[2], in.size() > 3 ? in[3] : nullptr, silu);
        return check_final_state ? out.final_state : out.out;
      },
      inputs);
  EXPECT_TRUE(result.ok) << "B " << d.batch << " T " << d.length << " C " << d.channels << " W "
                         << d.width << (c.with_initial_state ? " with" : " without")
                         << " initial state, silu " << silu << ", final state " << check_final_state
                         << "\n"
                         << result.report;
}

TEST(Conv1d, GradcheckOutput) {
  expect_gradcheck({{2, 7, 3, 4}, false, true}, false, 131);
  expect_gradcheck({{2, 7, 3, 4}, true, true}, false, 135);
  expect_gradcheck({{1, 5, 5, 3}, true, true}, false, 139);
  expect_gradcheck({{2, 2, 3, 4}, true, true}, false, 143);  // T < W-1
  expect_gradcheck({{2, 6, 3, 4}, true, false}, false, 147);  // no SiLU
}

TEST(Conv1d, GradcheckFinalState) {
  expect_gradcheck({{2, 6, 3, 4}, true, true}, true, 151);
  expect_gradcheck({{2, 2, 3, 4}, true, true}, true, 155);   // T < W-1: part of it is the initial state
  expect_gradcheck({{1, 2, 3, 4}, false, true}, true, 159);  // ... or zeros
}

TEST(Conv1d, FloatBackwardMatchesDouble) {
  const int64_t batch = 2, length = 19, channels = 6, width = 4;
  Tensor x = random_normal({batch, length, channels}, 161), weight = random_normal({channels, width}, 162);
  Tensor bias = random_normal({channels}, 163), init = random_normal({batch, channels, width - 1}, 164);
  Tensor seed_out = random_normal({batch, length, channels}, 165);
  Tensor seed_state = random_normal({batch, channels, width - 1}, 166);
  std::vector<std::vector<double>> grads[2];
  for (int precision = 0; precision < 2; ++precision) {
    const DType dtype = precision == 0 ? DType::f64 : DType::f32;
    std::vector<Var> in = {leaf(x.to(dtype), true), leaf(weight.to(dtype), true),
                           leaf(bias.to(dtype), true), leaf(init.to(dtype), true)};
    ops::Conv1dOutput out = ops::conv1d(in[0], in[1], in[2], in[3]);
    autograd::backward({out.out, out.final_state}, {seed_out.to(dtype), seed_state.to(dtype)});
    for (const Var& v : in) grads[precision].push_back(v->grad.to_doubles());
  }
  for (size_t i = 0; i < 4; ++i) EXPECT_TRUE(all_close(grads[1][i], grads[0][i], 1e-4, 1e-5)) << "input " << i;
}

TEST(Conv1d, WeightChannelsMismatchNamesBothShapes) {
  Var x = leaf(random_normal({2, 37, 7}, 1, DType::f32));
  Var weight = leaf(random_normal({8, 4}, 2, DType::f32)), bias = leaf(random_normal({7}, 3, DType::f32));
  try {
    ops::conv1d(x, weight, bias, nullptr);
    FAIL() << "expected braid::Error";
  } catch (const Error& error) {
    EXPECT_NE(std::string(error.what()).find("[8, 4]"), std::string::npos) << error.what();
    EXPECT_NE(std::string(error.what()).find("[2, 37, 7]"), std::string::npos) << error.what();
  }
}

TEST(Conv1d, InitialStateShapeMismatchNamesBothShapes) {
  Var x = leaf(random_normal({2, 5, 7}, 1, DType::f32));
  Var weight = leaf(random_normal({7, 4}, 2, DType::f32)), bias = leaf(random_normal({7}, 3, DType::f32));
  Var init = leaf(random_normal({2, 7, 4}, 4, DType::f32));  // W, not W-1
  try {
    ops::conv1d(x, weight, bias, init);
    FAIL() << "expected braid::Error";
  } catch (const Error& error) {
    EXPECT_NE(std::string(error.what()).find("[2, 7, 4]"), std::string::npos) << error.what();
    EXPECT_NE(std::string(error.what()).find("[2, 7, 3]"), std::string::npos) << error.what();
  }
}

}  // namespace
}  // namespace braid
