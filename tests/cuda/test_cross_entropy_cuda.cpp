// Cross-entropy on CUDA against the CPU backend: ops::cross_entropy and the fused LM-head loss
// ops::lm_head_cross_entropy, forward and every gradient, in f32 and bf16, at odd vocabularies
// (misaligned rows: the row kernel's scalar head and tail), ragged chunks and the GPT-2 vocabulary;
// plus the out-of-range target flag, no-grad runs and the bf16 single- and multi-chunk weight
// gradient paths.
#include <cmath>

#include "autograd/tape.h"
#include "layers/ops/cross_entropy.h"
#include "tests/cuda/cuda_test_util.h"
#include "tests/test_util.h"

namespace braid {
namespace {

using autograd::leaf;
using autograd::Var;
using testing::OpInput;
using testing::error_of;
using testing::expect_cuda_matches_cpu;
using testing::random_normal;

using CudaCrossEntropy = testing::CudaTest;
using CudaLmHeadCrossEntropy = testing::CudaTest;

Tensor random_targets(int64_t rows, int64_t vocab, uint64_t seed, DType dtype) {
  std::vector<double> ids = testing::random_uniform({rows}, seed, 0.0, double(vocab)).to_doubles();
  for (double& id : ids) id = std::min(std::floor(id), double(vocab - 1));
  return Tensor::from_values(ids, {rows}, dtype);
}

struct Shape2 {
  int64_t rows, vocab;
  double stddev;  // of the logits
};

TEST_F(CudaCrossEntropy, MatchesCpu) {
  uint64_t seed = 5100;
  // 7 < one bf16 vector; 1001 and 4099 odd (every other row starts misaligned); 50257 GPT-2.
  // f32 at 3e-5: the CPU oracle (kept as it is) sums exp over the row in one running float sum,
  // which drifts by up to ~1e-5 relative over 4K-50K classes; the GPU's tree of partial sums is
  // closer to exact. The 50257 case uses logits of stddev 1 (at 3 the drift reaches ~8e-5).
  for (const Shape2& s : {Shape2{5, 7, 3.0}, Shape2{33, 1001, 3.0}, Shape2{17, 4099, 3.0},
                          Shape2{64, 50257, 1.0}}) {
    for (const auto& [dtype, rtol] : {std::pair{DType::f32, 3e-5}, std::pair{DType::bf16, 1e-2}}) {
      SCOPED_TRACE(str(s.rows, "x", s.vocab, " ", dtype_name(dtype)));
      expect_cuda_matches_cpu(
          [](const std::vector<Var>& in) { return std::vector<Var>{ops::cross_entropy(in[0], in[1])}; },
          {OpInput{random_normal({s.rows, s.vocab}, seed, DType::f32, s.stddev)},
           OpInput{random_targets(s.rows, s.vocab, seed + 1, seed % 2 ? DType::i32 : DType::i64),
                   OpInput::Role::constant}},
          dtype, rtol, seed + 2);
      seed += 3;
    }
  }
}

TEST_F(CudaCrossEntropy, LossIsF32AndBadTargetsNameTheRow) {
  Tensor logits = random_normal({4, 9}, 5200, DType::f32).to(DType::bf16).to(Device::cuda(0));
  Tensor targets = Tensor::from_values({1, 8, 0, 3}, {4}, DType::i32).to(Device::cuda(0));
  Var loss = ops::cross_entropy(leaf(logits), leaf(targets));
  EXPECT_EQ(loss->value.dtype(), DType::f32);
  EXPECT_TRUE(loss->value.device().is_cuda());
  for (double bad : {9.0, -1.0}) {
    Tensor bad_targets = Tensor::from_values({1, 8, bad, bad}, {4}, DType::i64).to(Device::cuda(0));
    EXPECT_PRED_FORMAT2(::testing::IsSubstring,
                        str("cross_entropy: target ", int64_t(bad),
                            " at row 2 is out of range for V = 9 classes (logits has shape [4, 9])"),
                        error_of([&] { ops::cross_entropy(leaf(logits), leaf(bad_targets)); }));
  }
}

// hidden ~ N(0, 1), weight ~ N(0, 1/d): logits of standard deviation about 1, as at initialisation.
// (bf16 logits are rounded to 8 significant bits before the softmax, so larger logits would move
// the largest probabilities by more than the bf16 tolerance.)
std::vector<OpInput> lm_head_inputs(int64_t rows, int64_t width, int64_t vocab, uint64_t seed) {
  return {OpInput{random_normal({rows, width}, seed, DType::f32)},
          OpInput{random_normal({vocab, width}, seed + 1, DType::f32, 1.0 / std::sqrt(double(width))),
                  OpInput::Role::parameter},
          OpInput{random_targets(rows, vocab, seed + 2, DType::i32), OpInput::Role::constant}};
}

struct LmHeadCase {
  int64_t rows, width, vocab, chunk;
  double f32_rtol = 1e-5;
};

TEST_F(CudaLmHeadCrossEntropy, MatchesCpu) {
  uint64_t seed = 5300;
  const LmHeadCase cases[] = {
      {37, 40, 1001, 10},    // 10, 10, 10, 7: ragged last chunk, odd V
      // GPT-2 vocabulary. f32 at 1e-4: d_hidden = d_logits W sums 50257 products, which the CPU
      // GEMM adds into one running f32 accumulator (measured ~3e-5 relative drift against f64).
      {64, 64, 50257, 0, 1e-4},   // one automatic chunk (bf16: d_weight kept in bf16)
      {64, 64, 50257, 24, 1e-4},  // 24, 24, 16 (bf16: d_weight summed in f32 over chunks)
      {300, 256, 8191, 128, 3e-5},  // 128, 128, 44; a few hundred rows (same drift, ~1e-5)
      {5, 3, 7, 0},          // tiny: V below one vector
  };
  for (const LmHeadCase& c : cases) {
    for (const auto& [dtype, rtol] : {std::pair{DType::f32, c.f32_rtol}, std::pair{DType::bf16, 1e-2}}) {
      SCOPED_TRACE(str(c.rows, "x", c.width, " V ", c.vocab, " chunk ", c.chunk, " ",
                       dtype_name(dtype)));
      const int64_t chunk = c.chunk;
      expect_cuda_matches_cpu(
          [chunk](const std::vector<Var>& in) {
            return std::vector<Var>{ops::lm_head_cross_entropy(in[0], in[1], in[2], chunk)};
          },
          lm_head_inputs(c.rows, c.width, c.vocab, seed), dtype, rtol, seed + 3);
      seed += 4;
    }
  }
}

TEST_F(CudaLmHeadCrossEntropy, NoGradAndWeightOnly) {
  const int64_t rows = 20, width = 16, vocab = 300;
  Tensor hidden = random_normal({rows, width}, 5400, DType::f32).to(Device::cuda(0));
  Tensor weight = random_normal({vocab, width}, 5401, DType::f32, 0.25).to(Device::cuda(0));
  Tensor targets = random_targets(rows, vocab, 5402, DType::i64).to(Device::cuda(0));
  Var reference = ops::lm_head_cross_entropy(leaf(hidden), leaf(weight), leaf(targets), 8);
  EXPECT_EQ(reference->value.dtype(), DType::f32);
  {
    autograd::NoGradScope no_grad;
    const size_t before = autograd::tape_size();
    Var loss = ops::lm_head_cross_entropy(leaf(hidden, true), leaf(weight, true), leaf(targets), 8);
    EXPECT_EQ(autograd::tape_size(), before);
    EXPECT_EQ(loss->value.to_doubles(), reference->value.to_doubles());
  }
  Var h = leaf(hidden), w = leaf(weight, true);
  autograd::backward(ops::lm_head_cross_entropy(h, w, leaf(targets), 8));
  EXPECT_FALSE(h->grad.defined());
  ASSERT_TRUE(w->grad.defined());
  Var h_cpu = leaf(hidden.to(Device::cpu())), w_cpu = leaf(weight.to(Device::cpu()), true);
  autograd::backward(ops::lm_head_cross_entropy(h_cpu, w_cpu, leaf(targets.to(Device::cpu())), 8));
  EXPECT_TRUE(testing::close_to_reference(w->grad.to_doubles(), w_cpu->grad.to_doubles(), 1e-5));
}

TEST_F(CudaLmHeadCrossEntropy, BadTargetsNameTheRow) {
  Tensor hidden = random_normal({6, 8}, 5500, DType::f32).to(DType::bf16).to(Device::cuda(0));
  Tensor weight = random_normal({11, 8}, 5501, DType::f32).to(Device::cuda(0));
  // Bad ids in the second and third chunks: the first bad row is reported, after the whole loop.
  Tensor targets = Tensor::from_values({0, 1, 2, 3, 11, -4}, {6}, DType::i64).to(Device::cuda(0));
  EXPECT_PRED_FORMAT2(
      ::testing::IsSubstring,
      "lm_head_cross_entropy: target 11 at row 4 is out of range for V = 11 classes (weight has "
      "shape [11, 8])",
      error_of([&] { ops::lm_head_cross_entropy(leaf(hidden, true), leaf(weight, true), leaf(targets), 2); }));
  EXPECT_PRED_FORMAT2(
      ::testing::IsSubstring, "weight is bf16[11, 8] on cuda:0 but the input is bf16[6, 8] on cuda:0",
      error_of([&] {
        ops::lm_head_cross_entropy(leaf(hidden), leaf(weight.to(DType::bf16)), leaf(targets));
      }));
}

}  // namespace
}  // namespace braid
