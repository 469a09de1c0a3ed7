// Softmax cross-entropy: the mean loss against a naive double loop (also at logits large enough
// to overflow a plain exp), the logits' gradient through gradcheck, bad-target messages. The fused
// LM-head loss: its row kernel against the naive loop, the op against linear + cross_entropy
// (forward and both gradients, at several chunk sizes), gradcheck, no-grad runs and its messages.
#include <cmath>

#include "autograd/gradcheck.h"
#include "autograd/tape.h"
#include "kernels/cpu/cross_entropy.h"
#include "layers/ops/cross_entropy.h"
#include "layers/ops/matmul.h"
#include "tests/test_util.h"

namespace braid {
namespace {

using autograd::leaf;
using autograd::Var;
using testing::all_close;
using testing::error_of;
using testing::random_normal;

Tensor random_targets(int64_t rows, int64_t vocab, uint64_t seed, DType dtype) {
  std::vector<double> ids = testing::random_uniform({rows}, seed, 0.0, double(vocab)).to_doubles();
  for (double& id : ids) id = std::floor(id);
  return Tensor::from_values(ids, {rows}, dtype);
}

// Mean over rows of log(sum_j exp(l_j)) - l_target, with the log-sum-exp shifted by the row
// maximum.
double naive_cross_entropy(const Tensor& logits, const Tensor& targets) {
  const int64_t rows = logits.size(0), vocab = logits.size(1);
  std::vector<double> l = logits.to_doubles(), t = targets.to_doubles();
  double total = 0;
  for (int64_t r = 0; r < rows; ++r) {
    double max = l[size_t(r * vocab)], sum = 0;
    for (int64_t j = 0; j < vocab; ++j) max = std::max(max, l[size_t(r * vocab + j)]);
    for (int64_t j = 0; j < vocab; ++j) sum += std::exp(l[size_t(r * vocab + j)] - max);
    total += max + std::log(sum) - l[size_t(r * vocab + int64_t(t[size_t(r)]))];
  }
  return total / double(rows);
}

TEST(CrossEntropy, ForwardMatchesNaiveLoop) {
  struct Case {
    int64_t rows, vocab;
    double stddev;
    DType targets_dtype;
  };
  uint64_t seed = 1600;
  // stddev 300 puts logits far beyond exp's float range: only a max-shifted sum survives.
  for (const Case& c : {Case{5, 7, 1.0, DType::i32}, Case{33, 1001, 3.0, DType::i64},
                        Case{4, 50, 300.0, DType::i32}, Case{3, 9, 1.0, DType::u16}}) {
    Tensor logits = random_normal({c.rows, c.vocab}, seed++, DType::f32, c.stddev);
    Tensor targets = random_targets(c.rows, c.vocab, seed++, c.targets_dtype);
    Var loss = ops::cross_entropy(leaf(logits), leaf(targets));
    EXPECT_EQ(loss->value.shape(), Shape{1});
    EXPECT_TRUE(all_close(loss->value, {naive_cross_entropy(logits, targets)}, 1e-5, 1e-6))
        << c.rows << "x" << c.vocab;
  }
}

TEST(CrossEntropy, Gradcheck) {
  uint64_t seed = 1700;
  for (const auto& [rows, vocab] :
       {std::pair{int64_t(4), int64_t(3)}, std::pair{int64_t(3), int64_t(11)}}) {
    auto result = autograd::gradcheck(
        [](const std::vector<Var>& in) { return ops::cross_entropy(in[0], in[1]); },
        {random_normal({rows, vocab}, seed++, DType::f64, 2.0),
         random_targets(rows, vocab, seed++, DType::i64)});
    EXPECT_TRUE(result.ok) << result.report;
  }
}

TEST(CrossEntropy, GradientIsSoftmaxMinusOneHotOverRows) {
  const int64_t rows = 6, vocab = 29;
  Tensor logits = random_normal({rows, vocab}, 1800, DType::f32, 2.0);
  Tensor targets = random_targets(rows, vocab, 1801, DType::i32);
  Var l = leaf(logits, true), t = leaf(targets);
  autograd::backward({ops::cross_entropy(l, t)}, {Tensor::full({1}, 0.5, DType::f32)});
  std::vector<double> x = logits.to_doubles(), target = targets.to_doubles(), expected(x.size());
  for (int64_t r = 0; r < rows; ++r) {
    double sum = 0;
    for (int64_t j = 0; j < vocab; ++j) sum += std::exp(x[size_t(r * vocab + j)]);
    for (int64_t j = 0; j < vocab; ++j)
      expected[size_t(r * vocab + j)] =
          (std::exp(x[size_t(r * vocab + j)]) / sum - (j == int64_t(target[size_t(r)]) ? 1 : 0)) *
          0.5 / rows;
  }
  EXPECT_TRUE(all_close(l->grad, expected, 1e-5, 1e-8));
  EXPECT_FALSE(t->grad.defined());
}

TEST(CrossEntropy, BadTargetsNameTheValueAndShapes) {
  Var logits = leaf(random_normal({3, 5}, 1900, DType::f32));
  for (double bad : {5.0, -2.0}) {
    std::string message = error_of([&] {
      ops::cross_entropy(logits, leaf(Tensor::from_values({0, bad, 4}, {3}, DType::i64)));
    });
    EXPECT_PRED_FORMAT2(::testing::IsSubstring,
                        str("target ", int64_t(bad), " at row 1 is out of range for V = 5"),
                        message);
  }
  std::string message = error_of([&] {
    ops::cross_entropy(logits, leaf(Tensor::from_values({0, 1}, {2}, DType::i32)));
  });
  EXPECT_PRED_FORMAT2(::testing::IsSubstring,
                      "cross_entropy: logits has shape [3, 5] but targets is i32[2]", message);
  message = error_of(
      [&] { ops::cross_entropy(logits, leaf(random_normal({3}, 1901, DType::f32))); });
  EXPECT_PRED_FORMAT2(::testing::IsSubstring, "but targets is f32[3]", message);
}

TEST(CrossEntropy, RowKernelWritesLossTermsAndGradientInPlace) {
  const int64_t rows = 7, vocab = 13, ld = 16;  // padded rows: columns 13..15 must stay untouched
  Tensor logits = random_normal({rows, ld}, 2000, DType::f32, 3.0);
  Tensor targets = random_targets(rows, vocab, 2001, DType::i64);
  const std::vector<double> x = logits.to_doubles(), t = targets.to_doubles();
  Tensor lse = Tensor::empty({rows}, DType::f32), row_loss = Tensor::empty({rows}, DType::f32);
  const double scale = 0.25;
  kernels::cpu::cross_entropy_rows<float>(logits.data<float>(), ld, targets.data<int64_t>(),
                                          lse.data<float>(), row_loss.data<float>(), true,
                                          float(scale), rows, vocab);
  std::vector<double> want_lse(rows), want_loss(rows), want_grad = x;
  for (int64_t r = 0; r < rows; ++r) {
    double max = x[size_t(r * ld)], sum = 0;
    for (int64_t j = 0; j < vocab; ++j) max = std::max(max, x[size_t(r * ld + j)]);
    for (int64_t j = 0; j < vocab; ++j) sum += std::exp(x[size_t(r * ld + j)] - max);
    want_lse[size_t(r)] = max + std::log(sum);
    const int64_t target = int64_t(t[size_t(r)]);
    want_loss[size_t(r)] = want_lse[size_t(r)] - x[size_t(r * ld + target)];
    for (int64_t j = 0; j < vocab; ++j)
      want_grad[size_t(r * ld + j)] =
          (std::exp(x[size_t(r * ld + j)] - want_lse[size_t(r)]) - (j == target ? 1 : 0)) * scale;
  }
  EXPECT_TRUE(all_close(lse, want_lse, 1e-6, 1e-6));
  EXPECT_TRUE(all_close(row_loss, want_loss, 1e-5, 1e-6));
  EXPECT_TRUE(all_close(logits, want_grad, 1e-5, 1e-7));  // padding compared to its old values
}

// hidden (rows, d) ~ N(0, 1) and weight (V, d) ~ N(0, 1/d) times `logit_scale`: logits of about
// that standard deviation.
struct LmHeadInputs {
  Tensor hidden, weight, targets;
};

LmHeadInputs lm_head_inputs(int64_t rows, int64_t width, int64_t vocab, uint64_t seed, DType dtype,
                            double logit_scale = 2.0) {
  return {random_normal({rows, width}, seed, dtype),
          random_normal({vocab, width}, seed + 1, dtype, logit_scale / std::sqrt(double(width))),
          random_targets(rows, vocab, seed + 2, DType::i32)};
}

// |got - want| <= rtol (|want| + rms(want)): relative, and relative to the typical size where
// entries cancel to near zero.
::testing::AssertionResult close_to(const Tensor& got, const Tensor& want, double rtol) {
  const std::vector<double> expected = want.to_doubles();
  double square_sum = 0;
  for (double value : expected) square_sum += value * value;
  return all_close(got.to_doubles(), expected, rtol,
                   rtol * std::sqrt(square_sum / double(expected.size())));
}

// Loss and both gradients of the fused op in f32 against ops::linear then ops::cross_entropy in f64
// on the same values (so the oracle's own rounding does not count), backward seeded with 0.7 (so
// the seed's scaling is checked too). grad_rtol: d_hidden sums V products in f32.
void expect_lm_head_matches_composed(int64_t rows, int64_t width, int64_t vocab, int64_t chunk,
                                     uint64_t seed, double grad_rtol = 1e-5) {
  const LmHeadInputs in = lm_head_inputs(rows, width, vocab, seed, DType::f32);
  Var h_fused = leaf(in.hidden.clone(), true), w_fused = leaf(in.weight.clone(), true);
  Var fused = ops::lm_head_cross_entropy(h_fused, w_fused, leaf(in.targets), chunk);
  autograd::backward({fused}, {Tensor::full({1}, 0.7, DType::f32)});
  Var h_ref = leaf(in.hidden.to(DType::f64), true), w_ref = leaf(in.weight.to(DType::f64), true);
  Var composed = ops::cross_entropy(ops::linear(h_ref, w_ref), leaf(in.targets));
  autograd::backward({composed}, {Tensor::full({1}, 0.7, DType::f64)});
  const std::string where = str(rows, "x", width, " V ", vocab, " chunk ", chunk);
  EXPECT_EQ(fused->value.shape(), Shape{1});
  EXPECT_EQ(fused->value.dtype(), DType::f32);
  EXPECT_TRUE(all_close(fused->value, composed->value.to_doubles(), 1e-6, 1e-6)) << where;
  EXPECT_EQ(h_fused->grad.dtype(), DType::f32);
  EXPECT_TRUE(close_to(h_fused->grad, h_ref->grad, grad_rtol)) << where;
  EXPECT_TRUE(close_to(w_fused->grad, w_ref->grad, grad_rtol)) << where;
}

TEST(LmHeadCrossEntropy, MatchesLinearThenCrossEntropy) {
  uint64_t seed = 2100;
  expect_lm_head_matches_composed(12, 8, 17, 0, seed += 3);   // automatic: one chunk
  expect_lm_head_matches_composed(12, 8, 17, 12, seed += 3);  // exactly one chunk
  expect_lm_head_matches_composed(12, 8, 17, 5, seed += 3);   // 5, 5, 2: ragged last chunk
  expect_lm_head_matches_composed(12, 8, 17, 1, seed += 3);   // a row at a time
  expect_lm_head_matches_composed(12, 8, 17, 40, seed += 3);  // larger than the rows
  expect_lm_head_matches_composed(33, 24, 1001, 7, seed += 3);
  expect_lm_head_matches_composed(64, 32, 4099, 0, seed += 3);
  // GPT-2 vocabulary, chunks 6, 6, 4. d_hidden = d_logits W runs 50257 f32 additions into one
  // accumulator in the CPU GEMM: a few 1e-5 of drift against the f64 oracle.
  expect_lm_head_matches_composed(16, 16, 50257, 6, seed += 3, 5e-5);
}

TEST(LmHeadCrossEntropy, AcceptsLeadingDimensionsAndTargetDtypes) {
  const LmHeadInputs in = lm_head_inputs(6, 5, 11, 2200, DType::f32);
  Var flat = ops::lm_head_cross_entropy(leaf(in.hidden), leaf(in.weight), leaf(in.targets));
  Var h = leaf(in.hidden.reshape({2, 3, 5}), true);
  Tensor targets_u16 = in.targets.to(DType::u16).reshape({2, 3});
  Var shaped = ops::lm_head_cross_entropy(h, leaf(in.weight), leaf(targets_u16), 4);
  EXPECT_TRUE(all_close(shaped->value, flat->value.to_doubles(), 1e-6, 1e-7));
  autograd::backward(shaped);
  EXPECT_EQ(h->grad.shape(), (Shape{2, 3, 5}));
}

TEST(LmHeadCrossEntropy, Gradcheck) {
  uint64_t seed = 2300;
  for (int64_t chunk : {int64_t(0), int64_t(2)}) {  // one chunk; 2, 2, 1
    const LmHeadInputs in = lm_head_inputs(5, 3, 7, seed += 3, DType::f64);
    auto result = autograd::gradcheck(
        [chunk](const std::vector<Var>& v) {
          return ops::lm_head_cross_entropy(v[0], v[1], v[2], chunk);
        },
        {in.hidden, in.weight, in.targets.to(DType::i64)});
    EXPECT_TRUE(result.ok) << "chunk " << chunk << "\n" << result.report;
  }
}

TEST(LmHeadCrossEntropy, GradientsOnlyWhereWanted) {
  const LmHeadInputs in = lm_head_inputs(9, 4, 10, 2400, DType::f32);
  Var reference = ops::lm_head_cross_entropy(leaf(in.hidden), leaf(in.weight), leaf(in.targets), 4);
  EXPECT_FALSE(reference->requires_grad);
  {
    // No grad: nothing is recorded, the loss is the same.
    autograd::NoGradScope no_grad;
    const size_t before = autograd::tape_size();
    Var loss = ops::lm_head_cross_entropy(leaf(in.hidden, true), leaf(in.weight, true),
                                          leaf(in.targets), 4);
    EXPECT_EQ(autograd::tape_size(), before);
    EXPECT_EQ(loss->value.to_doubles(), reference->value.to_doubles());
  }
  // Only the weight wants a gradient.
  Var h = leaf(in.hidden), w = leaf(in.weight, true);
  Var loss = ops::lm_head_cross_entropy(h, w, leaf(in.targets), 4);
  EXPECT_EQ(loss->value.to_doubles(), reference->value.to_doubles());
  autograd::backward(loss);
  EXPECT_FALSE(h->grad.defined());
  ASSERT_TRUE(w->grad.defined());
  Var w_ref = leaf(in.weight, true);
  autograd::backward(ops::cross_entropy(ops::linear(leaf(in.hidden), w_ref), leaf(in.targets)));
  EXPECT_TRUE(all_close(w->grad, w_ref->grad.to_doubles(), 1e-5, 1e-7));
}

TEST(LmHeadCrossEntropy, MessagesNameTheValuesAndShapes) {
  const LmHeadInputs in = lm_head_inputs(3, 4, 5, 2500, DType::f32);
  Var h = leaf(in.hidden), w = leaf(in.weight);
  for (double bad : {5.0, -2.0}) {
    std::string message = error_of([&] {
      ops::lm_head_cross_entropy(h, w, leaf(Tensor::from_values({0, bad, 4}, {3}, DType::i64)));
    });
    EXPECT_PRED_FORMAT2(::testing::IsSubstring,
                        str("lm_head_cross_entropy: target ", int64_t(bad),
                            " at row 1 is out of range for V = 5 classes (weight has shape [5, 4])"),
                        message);
  }
  EXPECT_PRED_FORMAT2(
      ::testing::IsSubstring,
      "lm_head_cross_entropy: hidden has shape [3, 4] but targets is i32[2] on cpu: targets must "
      "be one integer per hidden row",
      error_of([&] {
        ops::lm_head_cross_entropy(h, w, leaf(Tensor::from_values({0, 1}, {2}, DType::i32)));
      }));
  EXPECT_PRED_FORMAT2(
      ::testing::IsSubstring,
      "lm_head_cross_entropy: hidden has shape [3, 4] but weight has shape [5, 3]: inner sizes 4 "
      "and 3 differ",
      error_of([&] {
        ops::lm_head_cross_entropy(h, leaf(random_normal({5, 3}, 2501, DType::f32)),
                                   leaf(in.targets));
      }));
  EXPECT_PRED_FORMAT2(::testing::IsSubstring, "weight is f64[5, 4] on cpu but the input is f32",
                      error_of([&] {
                        ops::lm_head_cross_entropy(h, leaf(in.weight.to(DType::f64)),
                                                   leaf(in.targets));
                      }));
  EXPECT_PRED_FORMAT2(::testing::IsSubstring, "chunk_rows must be >= 0",
                      error_of([&] { ops::lm_head_cross_entropy(h, w, leaf(in.targets), -1); }));
}

}  // namespace
}  // namespace braid
