// Causal grouped-query attention: forward and LSE against a naive full-score-matrix loop, gradients
// through gradcheck, and the entry checks.
#include <cmath>
#include <limits>

#include "autograd/gradcheck.h"
#include "autograd/tape.h"
#include "kernels/cpu/attention.h"
#include "layers/ops/attention.h"
#include "tests/test_util.h"

namespace braid {
namespace {

using autograd::leaf;
using autograd::Var;
using testing::all_close;
using testing::random_normal;

struct AttentionCase {
  int64_t batch, time, q_heads, kv_heads, qk_dim, v_dim;
  int64_t window = 0, sink = 0;
  double scale = 0;  // 0: 1 / sqrt(qk_dim)
};

struct AttentionInputs {
  Tensor q, k, v;
};

struct NaiveAttention {
  std::vector<double> out, lse;
};

// Materializes each (b, h) score matrix with the mask, softmaxes its rows, and takes the weighted
// sum of the values.
NaiveAttention naive_attention(const AttentionInputs& in, const AttentionCase& c) {
  const std::vector<double> q = in.q.to_doubles(), k = in.k.to_doubles(), v = in.v.to_doubles();
  const int64_t T = c.time, Hq = c.q_heads, Hk = c.kv_heads, Dqk = c.qk_dim, Dv = c.v_dim;
  const double scale = c.scale != 0 ? c.scale : 1.0 / std::sqrt(double(Dqk));
  NaiveAttention result{std::vector<double>(c.batch * T * Hq * Dv, 0.0),
                        std::vector<double>(c.batch * Hq * T, 0.0)};
  for (int64_t b = 0; b < c.batch; ++b) {
    for (int64_t h = 0; h < Hq; ++h) {
      const int64_t kv_head = h / (Hq / Hk);
      std::vector<double> scores(T * T, -std::numeric_limits<double>::infinity());
      for (int64_t t = 0; t < T; ++t) {
        for (int64_t s = 0; s < T; ++s) {
          bool visible = s <= t && (c.window == 0 || t - s < c.window || s < c.sink);
          if (!visible) continue;
          double score = 0;
          for (int64_t d = 0; d < Dqk; ++d)
            score += q[((b * T + t) * Hq + h) * Dqk + d] *
                     k[((b * T + s) * Hk + kv_head) * Dqk + d];
          scores[t * T + s] = scale * score;
        }
      }
      for (int64_t t = 0; t < T; ++t) {
        double row_max = -std::numeric_limits<double>::infinity();
        for (int64_t s = 0; s < T; ++s) row_max = std::max(row_max, scores[t * T + s]);
        double total = 0;
        for (int64_t s = 0; s < T; ++s) total += std::exp(scores[t * T + s] - row_max);
        result.lse[(b * Hq + h) * T + t] = row_max + std::log(total);
        for (int64_t s = 0; s < T; ++s) {
          double p = std::exp(scores[t * T + s] - row_max) / total;
          for (int64_t d = 0; d < Dv; ++d)
            result.out[((b * T + t) * Hq + h) * Dv + d] +=
                p * v[((b * T + s) * Hk + kv_head) * Dv + d];
        }
      }
    }
  }
  return result;
}


AttentionInputs random_inputs(const AttentionCase& c, uint64_t seed, DType dtype) {
  return {random_normal({c.batch, c.time, c.q_heads, c.qk_dim}, seed, dtype),
          random_normal({c.batch, c.time, c.kv_heads, c.qk_dim}, seed + 1, dtype),
          random_normal({c.batch, c.time, c.kv_heads, c.v_dim}, seed + 2, dtype)};
}

ops::AttentionOptions options_of(const AttentionCase& c) { return {c.window, c.sink, c.scale}; }

// The op's output against the oracle, in f32 and in f64.
void expect_forward_matches(const AttentionCase& c, uint64_t seed) {
  for (DType dtype : {DType::f32, DType::f64}) {
    AttentionInputs in = random_inputs(c, seed, dtype);
    Var out = ops::attention(leaf(in.q), leaf(in.k), leaf(in.v), options_of(c));
    EXPECT_EQ(out->value.shape(), (Shape{c.batch, c.time, c.q_heads, c.v_dim}));
    NaiveAttention expected = naive_attention(in, c);
    double tolerance = dtype == DType::f32 ? 1e-5 : 1e-12;
    EXPECT_TRUE(all_close(out->value, expected.out, tolerance, tolerance / 10))
        << "Hq " << c.q_heads << " Hk " << c.kv_heads << " T " << c.time << " window " << c.window
        << " sink " << c.sink << " " << dtype_name(dtype);
  }
}

TEST(Attention, ForwardCausalGqaRatios) {
  expect_forward_matches({2, 7, 3, 3, 8, 8}, 100);    // ratio 1
  expect_forward_matches({1, 13, 4, 1, 5, 5}, 110);   // ratio 4
  expect_forward_matches({2, 9, 8, 1, 4, 4}, 120);    // ratio 8
  expect_forward_matches({1, 10, 16, 2, 3, 3}, 130);  // ratio 8 with two kv heads
}

TEST(Attention, ForwardHeadsNotPowerOfTwo) {
  expect_forward_matches({2, 11, 6, 2, 7, 7}, 200);
  expect_forward_matches({1, 9, 3, 3, 5, 5}, 210);
}

TEST(Attention, ForwardQkDimDiffersFromVDim) {
  expect_forward_matches({2, 10, 4, 2, 9, 16}, 300);
  expect_forward_matches({1, 5, 4, 1, 72, 128}, 310);  // the intra-hybrid head dims
}

TEST(Attention, ForwardSlidingWindowWithSink) {
  expect_forward_matches({2, 33, 4, 2, 6, 5, 4, 2}, 400);
  expect_forward_matches({1, 17, 2, 1, 4, 4, 3, 5}, 410);  // sink longer than the window
  expect_forward_matches({1, 9, 2, 2, 3, 3, 1, 0}, 420);   // each query sees only itself
  expect_forward_matches({1, 12, 2, 1, 3, 3, 5, 0}, 430);  // window without sink
}

TEST(Attention, ForwardCustomScale) { expect_forward_matches({1, 8, 4, 2, 6, 6, 0, 0, 0.3}, 500); }

TEST(Attention, LseMatchesNaive) {
  for (const AttentionCase& c :
       {AttentionCase{2, 9, 6, 2, 9, 16}, AttentionCase{1, 33, 4, 2, 6, 5, 4, 2}}) {
    AttentionInputs in = random_inputs(c, 600 + c.time, DType::f32);
    Tensor out = Tensor::empty({c.batch, c.time, c.q_heads, c.v_dim}, DType::f32);
    Tensor lse = Tensor::empty({c.batch, c.q_heads, c.time}, DType::f32);
    kernels::cpu::attention_forward<float>(
        in.q.data<float>(), in.k.data<float>(), in.v.data<float>(), out.data<float>(),
        lse.data<float>(), {c.batch, c.time, c.q_heads, c.kv_heads, c.qk_dim, c.v_dim},
        {c.window, c.sink}, float(1.0 / std::sqrt(double(c.qk_dim))));
    NaiveAttention expected = naive_attention(in, c);
    EXPECT_TRUE(all_close(lse, expected.lse, 1e-5, 1e-6));
    EXPECT_TRUE(all_close(out, expected.out, 1e-5, 1e-6));
  }
}

void expect_gradcheck(const AttentionCase& c, uint64_t seed) {
  AttentionInputs in = random_inputs(c, seed, DType::f64);
  ops::AttentionOptions options = options_of(c);
  auto result = autograd::gradcheck(
      [&](const std::vector<Var>& x) { return ops::attention(x[0], x[1], x[2], options); },
      {in.q, in.k, in.v});
  EXPECT_TRUE(result.ok) << "Hq " << c.q_heads << " Hk " << c.kv_heads << " window " << c.window
                         << ": " << result.report;
}

TEST(Attention, GradcheckCausalGqa) {
  expect_gradcheck({2, 6, 4, 2, 3, 3}, 700);
  expect_gradcheck({1, 7, 3, 1, 4, 4, 0, 0, 0.7}, 710);
}

TEST(Attention, GradcheckSlidingWindowWithSink) {
  expect_gradcheck({1, 33, 2, 1, 3, 2, 4, 2}, 800);
}

TEST(Attention, GradcheckQkDimDiffersFromVDim) {
  expect_gradcheck({1, 5, 3, 1, 4, 6}, 900);
  expect_gradcheck({2, 4, 2, 2, 5, 2}, 910);
}

// Calls ops::attention on fresh tensors of these shapes; expects an error naming `a` and `b`.
void expect_rejected(const Shape& q, const Shape& k, const Shape& v, const std::string& a,
                     const std::string& b) {
  try {
    ops::attention(leaf(random_normal(q, 1, DType::f32)), leaf(random_normal(k, 2, DType::f32)),
                   leaf(random_normal(v, 3, DType::f32)));
    FAIL() << "expected braid::Error";
  } catch (const Error& error) {
    EXPECT_NE(std::string(error.what()).find(a), std::string::npos) << error.what();
    EXPECT_NE(std::string(error.what()).find(b), std::string::npos) << error.what();
  }
}

TEST(Attention, BadInputsNameBothShapes) {
  // Query heads not a multiple of kv heads.
  expect_rejected({1, 4, 3, 8}, {1, 4, 2, 8}, {1, 4, 2, 8}, "[1, 4, 3, 8]", "[1, 4, 2, 8]");
  // Q and K head dims differ.
  expect_rejected({1, 4, 2, 8}, {1, 4, 2, 6}, {1, 4, 2, 8}, "[1, 4, 2, 8]", "[1, 4, 2, 6]");
  // Batch or time differ.
  expect_rejected({2, 4, 2, 8}, {1, 4, 2, 8}, {1, 4, 2, 8}, "[2, 4, 2, 8]", "[1, 4, 2, 8]");
  expect_rejected({1, 4, 2, 8}, {1, 4, 2, 8}, {1, 5, 2, 8}, "[1, 4, 2, 8]", "[1, 5, 2, 8]");
  // K and V kv heads differ.
  expect_rejected({1, 4, 2, 8}, {1, 4, 2, 8}, {1, 4, 1, 8}, "[1, 4, 2, 8]", "[1, 4, 1, 8]");
}

TEST(Attention, RejectsWrongRankAndNegativeWindow) {
  Var q = leaf(random_normal({1, 4, 2, 8}, 1, DType::f32));
  Var k = leaf(random_normal({1, 4, 2, 8}, 2, DType::f32));
  Var flat = leaf(random_normal({4, 16}, 3, DType::f32));
  EXPECT_THROW(ops::attention(q, k, flat), Error);
  try {
    ops::attention(q, k, k, {-1, 0});
    FAIL() << "expected braid::Error";
  } catch (const Error& error) {
    EXPECT_NE(std::string(error.what()).find("-1"), std::string::npos) << error.what();
  }
}

}  // namespace
}  // namespace braid
