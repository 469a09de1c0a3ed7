// Softmax cross-entropy: the mean loss against a naive double loop (also at logits large enough
// to overflow a plain exp), the logits' gradient through gradcheck, bad-target messages.
#include <cmath>

#include "autograd/gradcheck.h"
#include "autograd/tape.h"
#include "layers/ops/cross_entropy.h"
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

}  // namespace
}  // namespace braid
