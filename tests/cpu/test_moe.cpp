// MoE routing: router, permutation, gather and combine against naive double loops (including a tiny
// MoE forward built from the ops), gradients through gradcheck, the bias update's sign rule, and
// bad inputs; the dense route of decode steps (gates against the router's own decisions and the
// naive route, the gated sum against a naive loop) and the MoE layer's decode step against its
// routed forward.
#include <algorithm>
#include <cmath>
#include <functional>
#include <numeric>
#include <string>

#include "autograd/gradcheck.h"
#include "autograd/tape.h"
#include "layers/ffn.h"
#include "layers/inference_cache.h"
#include "layers/ops/moe.h"
#include "tests/test_util.h"

namespace braid {
namespace {

using autograd::leaf;
using autograd::Var;
using testing::all_close;
using testing::random_normal;
using testing::random_uniform;

struct NaiveRoute {
  std::vector<double> indices;  // (n, k), best first
  std::vector<double> weights;  // (n, k)
  std::vector<double> load;     // (E)
};

double naive_sigmoid(double u) { return 1.0 / (1.0 + std::exp(-u)); }

// Sorts every token's experts by (sigmoid + bias) descending, lower index first on ties.
NaiveRoute naive_route(const std::vector<double>& logits, const std::vector<double>& bias,
                       int64_t n, int64_t num_experts, int64_t k, bool normalize) {
  NaiveRoute route;
  route.load.assign(size_t(num_experts), 0.0);
  for (int64_t t = 0; t < n; ++t) {
    std::vector<int64_t> experts(static_cast<size_t>(num_experts));
    std::iota(experts.begin(), experts.end(), 0);
    auto key = [&](int64_t e) {
      return naive_sigmoid(logits[size_t(t * num_experts + e)]) + bias[size_t(e)];
    };
    std::stable_sort(experts.begin(), experts.end(),
                     [&](int64_t a, int64_t b) { return key(a) > key(b); });
    double sum = 0;
    for (int64_t j = 0; j < k; ++j)
      sum += naive_sigmoid(logits[size_t(t * num_experts + experts[size_t(j)])]);
    for (int64_t j = 0; j < k; ++j) {
      const int64_t e = experts[size_t(j)];
      const double score = naive_sigmoid(logits[size_t(t * num_experts + e)]);
      route.indices.push_back(double(e));
      route.weights.push_back(normalize ? score / sum : score);
      route.load[size_t(e)] += 1;
    }
  }
  return route;
}

// The smallest gap, over tokens, between the k-th and (k+1)-th biased keys: gradcheck inputs need
// it far above the finite-difference step so the selection cannot flip.
double selection_margin(const std::vector<double>& logits, const std::vector<double>& bias,
                        int64_t n, int64_t num_experts, int64_t k) {
  double margin = INFINITY;
  for (int64_t t = 0; t < n; ++t) {
    std::vector<double> keys;
    for (int64_t e = 0; e < num_experts; ++e)
      keys.push_back(naive_sigmoid(logits[size_t(t * num_experts + e)]) + bias[size_t(e)]);
    std::sort(keys.begin(), keys.end(), std::greater<>());
    if (k < num_experts) margin = std::min(margin, keys[size_t(k - 1)] - keys[size_t(k)]);
  }
  return margin;
}

struct RouteCase {
  int64_t n, num_experts, k;
  bool normalize;
};

TEST(MoeRoute, MatchesNaiveLoop) {
  uint64_t seed = 100;
  for (DType dtype : {DType::f32, DType::f64}) {
    for (RouteCase c :
         {RouteCase{37, 8, 1, false}, RouteCase{37, 8, 2, false}, RouteCase{13, 5, 1, false},
          RouteCase{13, 5, 2, false}, RouteCase{13, 5, 2, true}, RouteCase{9, 8, 3, true}}) {
      Tensor logits = random_normal({c.n, c.num_experts}, ++seed, dtype, 1.5);
      Tensor bias = random_normal({c.num_experts}, ++seed, DType::f32, 0.3);
      ops::RouteResult route = ops::moe_route(leaf(logits), bias, c.k, c.normalize);
      NaiveRoute expected =
          naive_route(logits.to_doubles(), bias.to_doubles(), c.n, c.num_experts, c.k, c.normalize);
      SCOPED_TRACE(str(dtype_name(dtype), " n=", c.n, " E=", c.num_experts, " k=", c.k));
      EXPECT_EQ(route.indices.shape(), (Shape{c.n, c.k}));
      EXPECT_EQ(route.indices.to_doubles(), expected.indices);
      EXPECT_TRUE(all_close(route.weights->value, expected.weights, 1e-6, 1e-7));
      EXPECT_EQ(route.load.to_doubles(), expected.load);
    }
  }
}

TEST(MoeRoute, TiesGoToTheLowerExpert) {
  // Tokens 0 and 2: all experts equal. Token 1: experts 1 and 3 tie for first, 0 and 4 for fourth.
  // With `lifted` below, expert 2's bias puts it first where the scores tie; the rest still tie.
  Tensor logits = Tensor::from_values({0.5, 0.5, 0.5, 0.5, 0.5,    //
                                       -1.0, 2.0, 0.0, 2.0, -1.0,  //
                                       0.3, 0.3, 0.3, 0.3, 0.3},
                                      {3, 5}, DType::f64);
  Tensor bias = Tensor::from_values({0, 0, 0, 0, 0}, {5}, DType::f64);
  ops::RouteResult top1 = ops::moe_route(leaf(logits), bias, 1);
  EXPECT_EQ(top1.indices.to_doubles(), (std::vector<double>{0, 1, 0}));
  ops::RouteResult top3 = ops::moe_route(leaf(logits), bias, 3);
  EXPECT_EQ(top3.indices.to_doubles(), (std::vector<double>{0, 1, 2, 1, 3, 2, 0, 1, 2}));

  Tensor lifted = Tensor::from_values({0, 0, 0.25, 0, 0}, {5}, DType::f64);
  ops::RouteResult biased = ops::moe_route(leaf(logits), lifted, 2);
  EXPECT_EQ(biased.indices.to_doubles(), (std::vector<double>{2, 0, 1, 3, 2, 0}));
}

TEST(MoeRoute, BiasChangesSelectionButNotWeight) {
  // Expert 2 has the largest logit, but expert 5's bias outweighs the score gap.
  Tensor logits =
      Tensor::from_values({0.1, -0.4, 1.2, 0.3, -2.0, 0.8, 0.0, -0.7}, {1, 8}, DType::f64);
  Tensor no_bias = Tensor::zeros({8}, DType::f64);
  Tensor bias = Tensor::from_values({0, 0, 0, 0, 0, 0.2, 0, 0}, {8}, DType::f64);
  ops::RouteResult plain = ops::moe_route(leaf(logits), no_bias, 1);
  ops::RouteResult biased = ops::moe_route(leaf(logits), bias, 1);
  EXPECT_EQ(plain.indices.to_doubles(), (std::vector<double>{2}));
  EXPECT_EQ(biased.indices.to_doubles(), (std::vector<double>{5}));
  EXPECT_TRUE(all_close(biased.weights->value, {naive_sigmoid(0.8)}, 1e-15, 0));
}

TEST(MoePermute, ExpertMajorAndStable) {
  uint64_t seed = 200;
  for (RouteCase c :
       {RouteCase{29, 8, 1, false}, RouteCase{17, 5, 2, false}, RouteCase{6, 5, 5, false}}) {
    Tensor logits = random_normal({c.n, c.num_experts}, ++seed, DType::f32);
    Tensor bias = random_normal({c.num_experts}, ++seed, DType::f32, 0.2);
    ops::RouteResult route = ops::moe_route(leaf(logits), bias, c.k);
    std::vector<double> indices = route.indices.to_doubles();
    std::vector<double> order, offsets{0};
    for (int64_t e = 0; e < c.num_experts; ++e) {
      for (int64_t t = 0; t < c.n; ++t)
        for (int64_t j = 0; j < c.k; ++j)
          if (indices[size_t(t * c.k + j)] == double(e)) order.push_back(double(t * c.k + j));
      offsets.push_back(double(order.size()));
    }
    EXPECT_EQ(route.order.to_doubles(), order);
    EXPECT_EQ(route.offsets.to_doubles(), offsets);
  }
}

// A tiny MoE forward from the ops: route, gather, expert e multiplies its slice of xs by W_e,
// combine. Against out[t] = sum_j score_j * W_{e_j} x[t] computed straight from the definition.
TEST(MoeForward, OpsComposeToTheNaiveFormula) {
  uint64_t seed = 300;
  struct Case {
    int64_t n, num_experts, k, d_in, d_out;
  };
  for (Case c : {Case{23, 8, 1, 6, 4}, Case{11, 5, 2, 3, 7}}) {
    Tensor x = random_normal({c.n, c.d_in}, ++seed, DType::f32);
    Tensor logits = random_normal({c.n, c.num_experts}, ++seed, DType::f32);
    Tensor bias = random_normal({c.num_experts}, ++seed, DType::f32, 0.3);
    Tensor experts = random_normal({c.num_experts, c.d_out, c.d_in}, ++seed, DType::f32);
    std::vector<double> w = experts.to_doubles();
    auto matrix = [&](int64_t e, int64_t r, int64_t i) {
      return w[size_t((e * c.d_out + r) * c.d_in + i)];
    };

    ops::RouteResult route = ops::moe_route(leaf(logits), bias, c.k);
    Var xs = ops::moe_gather(leaf(x), route);
    std::vector<double> offsets = route.offsets.to_doubles();
    Tensor ys = Tensor::empty({c.n * c.k, c.d_out}, DType::f32);
    for (int64_t e = 0; e < c.num_experts; ++e) {
      const int64_t start = int64_t(offsets[size_t(e)]),
                    rows = int64_t(offsets[size_t(e + 1)]) - start;
      if (rows == 0) continue;
      std::vector<double> input = xs->value.narrow(0, start, rows).to_doubles();
      float* output = ys.narrow(0, start, rows).data<float>();
      for (int64_t p = 0; p < rows; ++p)
        for (int64_t r = 0; r < c.d_out; ++r) {
          double sum = 0;
          for (int64_t i = 0; i < c.d_in; ++i)
            sum += matrix(e, r, i) * input[size_t(p * c.d_in + i)];
          output[p * c.d_out + r] = float(sum);
        }
    }
    Var out = ops::moe_combine(leaf(ys), route.weights, route);

    std::vector<double> xv = x.to_doubles(), lv = logits.to_doubles(), bv = bias.to_doubles();
    std::vector<double> expected(size_t(c.n * c.d_out), 0.0);
    for (int64_t t = 0; t < c.n; ++t) {
      std::vector<double> keys;
      for (int64_t e = 0; e < c.num_experts; ++e)
        keys.push_back(naive_sigmoid(lv[size_t(t * c.num_experts + e)]) + bv[size_t(e)]);
      std::vector<bool> taken(size_t(c.num_experts), false);
      for (int64_t j = 0; j < c.k; ++j) {
        int64_t best = -1;
        for (int64_t e = 0; e < c.num_experts; ++e)
          if (!taken[size_t(e)] && (best < 0 || keys[size_t(e)] > keys[size_t(best)])) best = e;
        taken[size_t(best)] = true;
        const double score = naive_sigmoid(lv[size_t(t * c.num_experts + best)]);
        for (int64_t r = 0; r < c.d_out; ++r) {
          double y = 0;
          for (int64_t i = 0; i < c.d_in; ++i) y += matrix(best, r, i) * xv[size_t(t * c.d_in + i)];
          expected[size_t(t * c.d_out + r)] += score * y;
        }
      }
    }
    EXPECT_EQ(out->value.shape(), (Shape{c.n, c.d_out}));
    EXPECT_TRUE(all_close(out->value, expected, 1e-5, 1e-6));
  }
}

TEST(MoeRoute, Gradcheck) {
  uint64_t seed = 400;
  for (RouteCase c : {RouteCase{6, 8, 1, false}, RouteCase{5, 5, 2, false},
                      RouteCase{4, 5, 3, true}, RouteCase{7, 8, 2, true}}) {
    Tensor logits = random_normal({c.n, c.num_experts}, ++seed, DType::f64, 1.5);
    Tensor bias = random_normal({c.num_experts}, ++seed, DType::f64, 0.2);
    ASSERT_GT(selection_margin(logits.to_doubles(), bias.to_doubles(), c.n, c.num_experts, c.k),
              1e-4);
    auto result = autograd::gradcheck(
        [&](const std::vector<Var>& in) {
          return ops::moe_route(in[0], bias, c.k, c.normalize).weights;
        },
        {logits});
    EXPECT_TRUE(result.ok) << "n=" << c.n << " E=" << c.num_experts << " k=" << c.k << ": "
                           << result.report;
  }
}

TEST(MoeGather, Gradcheck) {
  uint64_t seed = 500;
  for (RouteCase c : {RouteCase{7, 8, 1, false}, RouteCase{5, 5, 2, false}}) {
    seed += 10;
    ops::RouteResult route = ops::moe_route(leaf(random_normal({c.n, c.num_experts}, seed + 1)),
                                            random_normal({c.num_experts}, seed + 2), c.k);
    auto result = autograd::gradcheck(
        [&](const std::vector<Var>& in) { return ops::moe_gather(in[0], route); },
        {random_normal({c.n, 3 + c.k}, seed + 3)});
    EXPECT_TRUE(result.ok) << result.report;
  }
}

TEST(MoeCombine, Gradcheck) {
  uint64_t seed = 600;
  for (RouteCase c : {RouteCase{7, 8, 1, false}, RouteCase{5, 5, 2, false}}) {
    seed += 10;
    ops::RouteResult route = ops::moe_route(leaf(random_normal({c.n, c.num_experts}, seed + 1)),
                                            random_normal({c.num_experts}, seed + 2), c.k);
    auto result = autograd::gradcheck(
        [&](const std::vector<Var>& in) { return ops::moe_combine(in[0], in[1], route); },
        {random_normal({c.n * c.k, 4}, seed + 3), random_uniform({c.n, c.k}, seed + 4, 0.1, 0.9)});
    EXPECT_TRUE(result.ok) << result.report;
  }
}

// Route, gather, identity experts and combine chained: gradients reach both x and the logits.
TEST(MoeForward, GradcheckThroughTheChain) {
  const int64_t n = 5, num_experts = 5, k = 2;
  Tensor logits = random_normal({n, num_experts}, 701, DType::f64, 1.5);
  Tensor bias = random_normal({num_experts}, 702, DType::f64, 0.2);
  ASSERT_GT(selection_margin(logits.to_doubles(), bias.to_doubles(), n, num_experts, k), 1e-4);
  auto result = autograd::gradcheck(
      [&](const std::vector<Var>& in) {
        ops::RouteResult route = ops::moe_route(in[1], bias, k);
        return ops::moe_combine(ops::moe_gather(in[0], route), route.weights, route);
      },
      {random_normal({n, 3}, 703), logits});
  EXPECT_TRUE(result.ok) << result.report;
}

TEST(MoeBiasUpdate, SignRuleWithTieToTheMean) {
  // Loads {2, 5, 3, 2}: mean 3, so expert 2 sits exactly on the mean and keeps its bias.
  Tensor bias = Tensor::from_values({0.1, -0.2, 0.05, 0.0}, {4}, DType::f32);
  ops::moe_bias_update(bias, Tensor::from_values({2, 5, 3, 2}, {4}, DType::i64));
  EXPECT_TRUE(all_close(bias, {0.1 + 1e-3, -0.2 - 1e-3, 0.05, 1e-3}, 1e-6, 0));
  // Non-integer mean 2.4 with a custom rate.
  Tensor bias5 = Tensor::from_values({0, 0, 0, 0, 0}, {5}, DType::f64);
  ops::moe_bias_update(bias5, Tensor::from_values({0, 4, 2, 3, 3}, {5}, DType::i64), 0.5);
  EXPECT_EQ(bias5.to_doubles(), (std::vector<double>{0.5, -0.5, 0.5, -0.5, -0.5}));
  // The load from a route feeds it directly.
  Tensor logits = random_normal({31, 8}, 801, DType::f32);
  Tensor routed_bias = Tensor::zeros({8}, DType::f32);
  ops::RouteResult route = ops::moe_route(leaf(logits), routed_bias, 1);
  ops::moe_bias_update(routed_bias, route.load);
  std::vector<double> load = route.load.to_doubles(), updated = routed_bias.to_doubles();
  for (size_t e = 0; e < 8; ++e) {
    const double excess = 31.0 - 8.0 * load[e];
    EXPECT_NEAR(updated[e], 1e-3 * ((excess > 0) - (excess < 0)), 1e-9) << "expert " << e;
  }
}

// The route in dense form: row t holds weights[t, j] at expert indices[t, j], zero elsewhere.
std::vector<double> scatter_route(const std::vector<double>& indices,
                                  const std::vector<double>& weights, int64_t n, int64_t num_experts,
                                  int64_t k) {
  std::vector<double> dense(size_t(n * num_experts), 0.0);
  for (int64_t t = 0; t < n; ++t)
    for (int64_t j = 0; j < k; ++j)
      dense[size_t(t * num_experts + int64_t(indices[size_t(t * k + j)]))] =
          weights[size_t(t * k + j)];
  return dense;
}

// The gates are moe_route's weights at its indices and zero elsewhere, exactly (the same decision
// and the same arithmetic), and follow the naive route; random biased logits and exact ties.
TEST(MoeDenseGates, AreTheRouteWeightsAtItsIndices) {
  uint64_t seed = 1000;
  for (DType dtype : {DType::f32, DType::f64}) {
    for (int64_t num_experts : {5, 8, 64})
      for (int64_t k : {1, 2})
        for (int64_t n : {1, 3, 37})
          for (bool normalize : {false, true}) {
            SCOPED_TRACE(str(dtype_name(dtype), " n=", n, " E=", num_experts, " k=", k,
                             normalize ? " normalized" : ""));
            Tensor logits = random_normal({n, num_experts}, ++seed, dtype, 1.5);
            Tensor bias = random_normal({num_experts}, ++seed, DType::f32, 0.3);
            Tensor gates = ops::moe_dense_gates(logits, bias, k, normalize);
            EXPECT_EQ(gates.dtype(), dtype);
            EXPECT_EQ(gates.shape(), (Shape{n, num_experts}));
            ops::RouteResult route = ops::moe_route(leaf(logits), bias, k, normalize);
            EXPECT_EQ(gates.to_doubles(),
                      scatter_route(route.indices.to_doubles(), route.weights->value.to_doubles(),
                                    n, num_experts, k));
            NaiveRoute naive = naive_route(logits.to_doubles(), bias.to_doubles(), n, num_experts,
                                           k, normalize);
            EXPECT_TRUE(all_close(gates, scatter_route(naive.indices, naive.weights, n,
                                                       num_experts, k),
                                  1e-6, 1e-7));
          }
  }
  // Ties go to the lower expert, as in the router: token 1 ties experts 1 and 3 for first.
  Tensor tied = Tensor::from_values({0.5, 0.5, 0.5, 0.5, 0.5,  //
                                     -1.0, 2.0, 0.0, 2.0, -1.0},
                                    {2, 5}, DType::f64);
  const double s = naive_sigmoid(0.5), top = naive_sigmoid(2.0);
  EXPECT_TRUE(all_close(ops::moe_dense_gates(tied, Tensor::zeros({5}, DType::f64), 2),
                        {s, s, 0, 0, 0, 0, top, 0, top, 0}, 1e-15, 0));
}

// out[t] = sum_e gates[t, e] * ys[e*n + t] against a double loop, with gates from the router (so
// most are zero); an unselected expert's rows are never read, so a NaN there does not reach out.
TEST(MoeDenseCombine, MatchesNaiveGatedSum) {
  uint64_t seed = 1100;
  struct Case {
    int64_t n, num_experts, k, d;
  };
  for (DType dtype : {DType::f32, DType::f64}) {
    for (Case c : {Case{1, 8, 1, 16}, Case{3, 5, 2, 7}, Case{8, 64, 2, 33}}) {
      SCOPED_TRACE(str(dtype_name(dtype), " n=", c.n, " E=", c.num_experts, " k=", c.k));
      const Tensor logits = random_normal({c.n, c.num_experts}, ++seed, dtype, 1.5);
      const Tensor bias = random_normal({c.num_experts}, ++seed, DType::f32, 0.3);
      const Tensor gates = ops::moe_dense_gates(logits, bias, c.k, /*normalize=*/c.k == 2);
      Tensor ys = random_normal({c.num_experts * c.n, c.d}, ++seed, dtype);
      std::vector<double> g = gates.to_doubles(), y = ys.to_doubles();
      std::vector<double> expected(size_t(c.n * c.d), 0.0);
      for (int64_t t = 0; t < c.n; ++t)
        for (int64_t e = 0; e < c.num_experts; ++e)
          for (int64_t i = 0; i < c.d; ++i)
            expected[size_t(t * c.d + i)] +=
                g[size_t(t * c.num_experts + e)] * y[size_t((e * c.n + t) * c.d + i)];
      Tensor out = ops::moe_dense_combine(ys, gates);
      EXPECT_EQ(out.shape(), (Shape{c.n, c.d}));
      EXPECT_EQ(out.dtype(), dtype);
      EXPECT_TRUE(all_close(out, expected, 1e-6, 1e-7));

      for (int64_t e = 0; e < c.num_experts; ++e)
        for (int64_t t = 0; t < c.n; ++t)
          if (g[size_t(t * c.num_experts + e)] == 0)
            ys.narrow(0, e * c.n + t, 1).fill_(std::nan(""));
      EXPECT_TRUE(all_close(ops::moe_dense_combine(ys, gates), expected, 1e-6, 1e-7));
    }
  }
}

// The MoE layer's decode step (an InferenceStep with no prefill row) runs the dense route; its
// output is the routed forward's, and it adds nothing to the balancing load.
TEST(MoeLayer, DecodeStepMatchesRoutedForward) {
  const int64_t d_model = 16;
  for (int64_t top_k : {1, 2}) {
    FfnConfig config;
    config.kind = FfnConfig::Kind::moe;
    config.d_ffn = 24;
    config.n_experts = 8;
    config.top_k = top_k;
    MoE layer(d_model, config, TensorOptions{}, 0.2, 0.1);
    Generator generator(1200 + uint64_t(top_k));
    layer.initialize(generator);
    Tensor bias = layer.routing_bias();  // a handle to the layer's buffer
    bias.copy_from(random_normal({config.n_experts}, 1210 + uint64_t(top_k), DType::f32, 0.05));
    const Var x = leaf(random_normal({6, 1, d_model}, 1220 + uint64_t(top_k), DType::f32));
    autograd::NoGradScope no_grad;
    const Tensor want = layer.forward(x)->value;
    const Tensor got = layer.forward_inference(x, InferenceStep{})->value;
    EXPECT_EQ(got.shape(), want.shape());
    EXPECT_TRUE(all_close(got, want.to_doubles(), 1e-5, 1e-6)) << "top_k " << top_k;
    EXPECT_EQ(layer.load_since_update().to_doubles(), std::vector<double>(8, 0.0));
  }
}

void expect_error_mentions(const std::function<void()>& call,
                           const std::vector<std::string>& parts) {
  try {
    call();
    FAIL() << "expected braid::Error";
  } catch (const Error& error) {
    for (const std::string& part : parts)
      EXPECT_NE(std::string(error.what()).find(part), std::string::npos) << error.what();
  }
}

TEST(MoeRoute, BadInputsNameBothSides) {
  Var logits = leaf(random_normal({4, 8}, 901, DType::f32));
  expect_error_mentions([&] { ops::moe_route(logits, random_normal({5}, 902, DType::f32), 1); },
                        {"[5]", "[4, 8]"});
  Var narrow = leaf(random_normal({4, 2}, 903, DType::f32));
  expect_error_mentions([&] { ops::moe_route(narrow, Tensor::zeros({2}, DType::f32), 3); },
                        {"k = 3", "E = 2"});
  expect_error_mentions([&] { ops::moe_route(logits, Tensor::zeros({8}, DType::f32), 0); },
                        {"k = 0"});
  expect_error_mentions(
      [&] {
        ops::moe_route(leaf(random_normal({32}, 904, DType::f32)), Tensor::zeros({8}, DType::f32),
                       1);
      },
      {"logits", "[32]"});
}

TEST(MoeGatherCombine, BadInputsNameBothShapes) {
  ops::RouteResult route = ops::moe_route(leaf(random_normal({4, 5}, 911, DType::f32)),
                                          Tensor::zeros({5}, DType::f32), 2);
  expect_error_mentions(
      [&] {
        ops::moe_gather(leaf(random_normal({5, 3}, 912, DType::f32)), route);
      },
      {"[5, 3]", "[4, 2]"});
  expect_error_mentions(
      [&] {
        ops::moe_combine(leaf(random_normal({7, 3}, 913, DType::f32)), route.weights, route);
      },
      {"[7, 3]", "[4, 2]"});
  expect_error_mentions(
      [&] {
        ops::moe_combine(leaf(random_normal({8, 3}, 914, DType::f32)),
                         leaf(random_normal({4, 1}, 915, DType::f32)), route);
      },
      {"[4, 1]", "[4, 2]"});
  expect_error_mentions(
      [&] {
        ops::moe_combine(leaf(random_normal({8, 3}, 916, DType::f64)), route.weights, route);
      },
      {"f64", "f32"});
  expect_error_mentions(
      [&] {
        ops::moe_dense_combine(random_normal({7, 3}, 918, DType::f32),
                               random_normal({4, 2}, 919, DType::f32));
      },
      {"moe_dense_combine", "[7, 3]", "[4, 2]"});
  expect_error_mentions(
      [&] {
        ops::moe_dense_gates(random_normal({4, 8}, 920, DType::f32), Tensor::zeros({5}, DType::f32),
                             1);
      },
      {"moe_dense_gates", "[5]", "[4, 8]"});
  ops::RouteResult broken = route;
  broken.order = Tensor::from_values({0, 1, 2, 3, 4, 5, 6, 6}, {8}, DType::i32);
  expect_error_mentions(
      [&] {
        ops::moe_gather(leaf(random_normal({4, 3}, 917, DType::f32)), broken);
      },
      {"permutation", "entry 7"});
  expect_error_mentions(
      [&] { ops::moe_bias_update(Tensor::zeros({5}, DType::f32), Tensor::zeros({4}, DType::i64)); },
      {"[5]", "[4]"});
}

}  // namespace
}  // namespace braid
