// autograd::set_leaf_ready_hook: backward reports each leaf that needs a gradient once, as soon as
// the last node consuming it has run, with its gradient already final (data parallelism starts a
// bucket's all-reduce from it); nested backwards (recompute) report nothing.
#include <string>
#include <utility>
#include <vector>

#include "autograd/recompute.h"
#include "autograd/tape.h"
#include "layers/ops/elementwise.h"
#include "tests/test_util.h"

namespace braid {
namespace {

using autograd::leaf;
using autograd::Var;
using testing::random_normal;

struct Reports {
  std::vector<std::pair<std::string, std::vector<double>>> seen;  // name, gradient when reported
  Reports() {
    autograd::set_leaf_ready_hook([this](autograd::Variable& variable) {
      seen.emplace_back(variable.name, variable.grad.defined() ? variable.grad.to_doubles() : std::vector<double>{});
    });
  }
  ~Reports() { autograd::set_leaf_ready_hook(nullptr); }
};

TEST(LeafReadyHook, ReportsEachLeafOnceWithItsFinalGradient) {
  // w1 is consumed by the first and the third node: it is final only after the first has run, while
  // w2 (second node) is final before. x needs no gradient; w3 belongs to another graph.
  Var x = leaf(random_normal({6}, 1), false, "x");
  Var w1 = leaf(random_normal({6}, 2), true, "w1"), w2 = leaf(random_normal({6}, 3), true, "w2");
  Var w3 = leaf(random_normal({6}, 4), true, "w3");
  autograd::clear_tape();
  Var a = ops::mul(x, w1);
  Var b = ops::mul(a, w2);
  Var c = ops::mul(b, w1);
  Var beside = ops::sum(ops::mul(x, w3));
  Var loss = ops::sum(c);
  Reports reports;
  autograd::backward(loss);
  ASSERT_EQ(reports.seen.size(), 2u);
  EXPECT_EQ(reports.seen[0].first, "w2");
  EXPECT_EQ(reports.seen[1].first, "w1");
  EXPECT_EQ(reports.seen[0].second, w2->grad.to_doubles());
  EXPECT_EQ(reports.seen[1].second, w1->grad.to_doubles());
  // d/dw1 sum(x w1 w2 w1) = 2 x w1 w2: the report carried both contributions.
  const std::vector<double> xs = x->value.to_doubles(), w1s = w1->value.to_doubles(), w2s = w2->value.to_doubles();
  for (size_t i = 0; i < xs.size(); ++i) EXPECT_NEAR(reports.seen[1].second[i], 2 * xs[i] * w1s[i] * w2s[i], 1e-12);
  EXPECT_FALSE(w3->grad.defined());
  autograd::clear_tape();
}

TEST(LeafReadyHook, OffByDefaultAndSilentInsideRecompute) {
  Var w = leaf(random_normal({4}, 5), true, "w");
  {
    Var loss = ops::sum(ops::mul(w, w));
    autograd::backward(loss);  // no hook installed: nothing to call
  }
  Var inner = leaf(random_normal({4}, 6), true, "inner");
  Var outer = leaf(random_normal({4}, 7), true, "outer");
  std::vector<Var> out = autograd::recompute(
      [inner](const std::vector<Var>& in) { return std::vector<Var>{ops::mul(in[0], inner)}; }, {outer});
  Var loss = ops::sum(out[0]);
  Reports reports;
  autograd::backward(loss);
  // "outer" is an input of the outer recompute node; "inner" gets its gradient only inside the
  // recompute node's own backward, which reports nothing (it cannot know the outer graph).
  ASSERT_EQ(reports.seen.size(), 1u);
  EXPECT_EQ(reports.seen[0].first, "outer");
  EXPECT_TRUE(inner->grad.defined());
}

}  // namespace
}  // namespace braid
