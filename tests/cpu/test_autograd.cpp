// The tape: what is recorded, gradient flow and accumulation, recompute, and that gradcheck
// catches a wrong backward.
#include <cmath>

#include "autograd/gradcheck.h"
#include "autograd/recompute.h"
#include "autograd/tape.h"
#include "layers/ops/swiglu.h"
#include "tests/test_util.h"

namespace braid {
namespace {

using autograd::leaf;
using autograd::Var;
using testing::all_close;
using testing::random_normal;

double silu(double u) { return u / (1 + std::exp(-u)); }
double silu_grad(double u) {
  double s = 1 / (1 + std::exp(-u));
  return s * (1 + u * (1 - s));
}

TEST(Tape, RecordsOnlyWhatNeedsGradients) {
  autograd::clear_tape();
  Var constant_a = leaf(random_normal({3}, 1)), constant_b = leaf(random_normal({3}, 2));
  Var out = ops::swiglu(constant_a, constant_b);
  EXPECT_EQ(autograd::tape_size(), 0u);
  EXPECT_FALSE(out->requires_grad);
  Var parameter = leaf(random_normal({3}, 3), true);
  {
    autograd::NoGradScope no_grad;
    ops::swiglu(parameter, constant_b);
  }
  EXPECT_EQ(autograd::tape_size(), 0u);
  Var tracked = ops::swiglu(parameter, constant_b);
  EXPECT_EQ(autograd::tape_size(), 1u);
  EXPECT_TRUE(tracked->requires_grad);
  EXPECT_FALSE(tracked->is_leaf);
  autograd::clear_tape();
}

TEST(Tape, ChainRuleThroughTwoNodes) {
  // y = SiLU(SiLU(a) * b) * b ; dy/da and dy/db by hand.
  Tensor a = random_normal({5}, 4), b = random_normal({5}, 5), seed = random_normal({5}, 6);
  Var va = leaf(a, true), vb = leaf(b, true);
  Var h = ops::swiglu(va, vb);
  Var y = ops::swiglu(h, vb);
  autograd::backward({y}, {seed});
  std::vector<double> av = a.to_doubles(), bv = b.to_doubles(), sv = seed.to_doubles();
  std::vector<double> da(5), db(5);
  for (size_t i = 0; i < 5; ++i) {
    double hi = silu(av[i]) * bv[i];
    double dh = sv[i] * bv[i] * silu_grad(hi);
    da[i] = dh * bv[i] * silu_grad(av[i]);
    db[i] = sv[i] * silu(hi) + dh * silu(av[i]);
  }
  EXPECT_TRUE(all_close(va->grad, da, 1e-12, 1e-14));
  EXPECT_TRUE(all_close(vb->grad, db, 1e-12, 1e-14));
  EXPECT_FALSE(h->grad.defined());  // intermediate gradients are freed
  EXPECT_EQ(autograd::tape_size(), 0u);
}

TEST(Tape, BackwardRunsOnlyTheGraphOfItsRoots) {
  // Two graphs recorded side by side: backward of one leaves the other on the tape, intact.
  autograd::clear_tape();
  Tensor a = random_normal({4}, 7), b = random_normal({4}, 8), seed = random_normal({4}, 9);
  Var first_a = leaf(a, true), first_b = leaf(b, true);
  Var second_a = leaf(a, true), second_b = leaf(b, true);
  Var first = ops::swiglu(first_a, first_b);
  Var second = ops::swiglu(second_a, second_b);
  autograd::backward({first}, {seed});
  EXPECT_EQ(autograd::tape_size(), 1u);
  EXPECT_FALSE(second_a->grad.defined());
  autograd::backward({second}, {seed});
  EXPECT_EQ(autograd::tape_size(), 0u);
  EXPECT_TRUE(all_close(second_a->grad, first_a->grad.to_doubles(), 0, 0));
  EXPECT_TRUE(all_close(second_b->grad, first_b->grad.to_doubles(), 0, 0));
}

TEST(Tape, GradientsAccumulateAcrossMicroBatches) {
  Var w = leaf(random_normal({4}, 7), true);
  Tensor x1 = random_normal({4}, 8), x2 = random_normal({4}, 9), seed = random_normal({4}, 10);
  autograd::backward({ops::swiglu(leaf(x1), w)}, {seed});
  std::vector<double> first = w->grad.to_doubles();
  autograd::backward({ops::swiglu(leaf(x2), w)}, {seed});
  std::vector<double> expected(4), xv1 = x1.to_doubles(), xv2 = x2.to_doubles(), sv = seed.to_doubles();
  for (size_t i = 0; i < 4; ++i) expected[i] = sv[i] * (silu(xv1[i]) + silu(xv2[i]));
  EXPECT_TRUE(all_close(w->grad, expected, 1e-12, 1e-14));
  EXPECT_TRUE(all_close(first, std::vector<double>{sv[0] * silu(xv1[0]), sv[1] * silu(xv1[1]),
                                                   sv[2] * silu(xv1[2]), sv[3] * silu(xv1[3])},
                        1e-12, 1e-14));
}

TEST(Tape, SameVariableInTwoSlotsGetsBothContributions) {
  Tensor a = random_normal({6}, 11), seed = random_normal({6}, 12);
  Var va = leaf(a, true);
  autograd::backward({ops::swiglu(va, va)}, {seed});  // y = SiLU(a) * a
  std::vector<double> av = a.to_doubles(), sv = seed.to_doubles(), expected(6);
  for (size_t i = 0; i < 6; ++i) expected[i] = sv[i] * (silu_grad(av[i]) * av[i] + silu(av[i]));
  EXPECT_TRUE(all_close(va->grad, expected, 1e-12, 1e-14));
}

TEST(Tape, Fp32ValuesGetFp32Gradients) {
  Var w = leaf(random_normal({3}, 13, DType::f32), true);
  autograd::backward({ops::swiglu(w, w)}, {random_normal({3}, 14, DType::f32)});
  EXPECT_EQ(w->grad.dtype(), DType::f32);
}

TEST(Recompute, SameGradientsAndOneNodeOnTheTape) {
  Tensor x = random_normal({2, 5}, 15), w = random_normal({2, 5}, 16), seed = random_normal({2, 5}, 17);
  auto block_with = [](const Var& parameter) {
    return [parameter](const std::vector<Var>& in) {
      return std::vector<Var>{ops::swiglu(ops::swiglu(in[0], parameter), in[0])};
    };
  };
  // Plain.
  Var x_plain = leaf(x, true), w_plain = leaf(w, true);
  autograd::backward({block_with(w_plain)({x_plain})[0]}, {seed});
  // Recomputed: the parameter is captured by the block, not passed as an input.
  Var x_re = leaf(x, true), w_re = leaf(w, true);
  autograd::clear_tape();
  std::vector<Var> out = autograd::recompute(block_with(w_re), {x_re});
  EXPECT_EQ(autograd::tape_size(), 1u);
  autograd::backward({out[0]}, {seed});
  EXPECT_TRUE(all_close(x_re->grad, x_plain->grad.to_doubles(), 1e-14, 0));
  EXPECT_TRUE(all_close(w_re->grad, w_plain->grad.to_doubles(), 1e-14, 0));
}

TEST(Recompute, ParametersGetGradientsEvenWhenInputsDoNot) {
  Var w = leaf(random_normal({4}, 18), true);
  std::vector<Var> out = autograd::recompute(
      [w](const std::vector<Var>& in) { return std::vector<Var>{ops::swiglu(in[0], w)}; },
      {leaf(random_normal({4}, 19))});
  autograd::backward({out[0]}, {random_normal({4}, 20)});
  EXPECT_TRUE(w->grad.defined());
}

// A node whose backward is deliberately wrong (off by 10%): gradcheck must notice.
class WrongSquareNode : public autograd::Node {
 public:
  explicit WrongSquareNode(Tensor x) : x_(std::move(x)) {}
  const char* name() const override { return "wrong_square"; }
  std::vector<Tensor> backward(const std::vector<Tensor>& grads) override {
    Tensor dx = Tensor::empty(x_.shape(), DType::f64);
    for (int64_t i = 0; i < x_.numel(); ++i)
      dx.data<double>()[i] = 2.2 * x_.data<double>()[i] * grads[0].data<double>()[i];
    return {dx};
  }
  Tensor x_;
};

Var wrong_square(const Var& x) {
  Tensor y = Tensor::empty(x->value.shape(), DType::f64);
  for (int64_t i = 0; i < y.numel(); ++i) y.data<double>()[i] = std::pow(x->value.data<double>()[i], 2);
  return autograd::record(std::make_shared<WrongSquareNode>(x->value.clone()), {x}, y);
}

TEST(Gradcheck, CatchesAWrongBackward) {
  auto result = autograd::gradcheck([](const std::vector<Var>& in) { return wrong_square(in[0]); },
                                    {random_normal({5}, 21)});
  EXPECT_FALSE(result.ok);
  EXPECT_GT(result.max_rel_error, 0.05);
  EXPECT_NE(result.report.find("input 0"), std::string::npos);
}

TEST(Gradcheck, PassesACorrectOneAndSkipsIntegerInputs) {
  auto result = autograd::gradcheck(
      [](const std::vector<Var>& in) { return ops::swiglu(in[0], in[1]); },
      {random_normal({3, 4}, 22), random_normal({3, 4}, 23)});
  EXPECT_TRUE(result.ok) << result.report;
  EXPECT_EQ(result.elements_checked, 24);
  EXPECT_THROW(autograd::gradcheck([](const std::vector<Var>& in) { return in[0]; },
                                   {random_normal({2}, 1, DType::f32)}),
               Error);
}

}  // namespace
}  // namespace braid
