// MoE routing ops on a CUDA device against the CPU backend: the router's choices, permutation,
// offsets and load exactly (random, biased and tied inputs), weights within 1e-6, gather / combine /
// the route-gather-combine chain forward and backward in f32 and bf16, the bias update exactly, and
// the whole MoE FFN module (same parameters on both backends) in f32; the dense route of decode
// steps (gates: the same decisions as the CPU and as the GPU router itself; the gated sum in f32
// and bf16) and the module's decode step against the CPU's routed forward.
#include <cmath>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "autograd/tape.h"
#include "layers/ffn.h"
#include "layers/inference_cache.h"
#include "layers/ops/moe.h"
#include "tests/cuda/cuda_test_util.h"
#include "tests/test_util.h"

namespace braid {
namespace {

using autograd::leaf;
using autograd::Var;
using testing::OpInput;

using CudaMoe = testing::CudaTest;

const Device kGpu = Device::cuda(0);

struct RouteCase {
  int64_t n, num_experts, k;
  bool normalize;
};

std::string describe(const RouteCase& c, DType dtype) {
  return str(dtype_name(dtype), " n=", c.n, " E=", c.num_experts, " k=", c.k,
             c.normalize ? " normalized" : "");
}

// Routes host logits (f32, already rounded to `dtype`) on the CPU in f32 and on the GPU in `dtype`
// and requires the same decisions: indices, order, offsets and load equal, weights within 1e-6.
// `bias_on_host` passes the GPU route a host bias (the MoE layer's buffer lives there today).
void expect_same_route(const Tensor& logits, const Tensor& bias, const RouteCase& c, DType dtype,
                       bool bias_on_host) {
  SCOPED_TRACE(describe(c, dtype) + (bias_on_host ? " (host bias)" : ""));
  ops::RouteResult want = ops::moe_route(leaf(logits), bias, c.k, c.normalize);
  ops::RouteResult got = ops::moe_route(leaf(logits.to(dtype).to(kGpu)),
                                        bias_on_host ? bias : bias.to(kGpu), c.k, c.normalize);
  ASSERT_TRUE(got.indices.device().is_cuda());
  ASSERT_TRUE(got.order.device().is_cuda());
  ASSERT_TRUE(got.weights->value.device().is_cuda());
  ASSERT_TRUE(got.offsets.device().is_cpu()) << "the MoE layer reads offsets on the host";
  ASSERT_TRUE(got.load.device().is_cpu()) << "the MoE layer sums the load on the host";
  EXPECT_EQ(got.weights->value.dtype(), DType::f32);
  EXPECT_EQ(got.indices.shape(), want.indices.shape());
  EXPECT_EQ(got.indices.to_doubles(), want.indices.to_doubles());
  EXPECT_EQ(got.order.to_doubles(), want.order.to_doubles());
  EXPECT_EQ(got.offsets.to_doubles(), want.offsets.to_doubles());
  EXPECT_EQ(got.load.to_doubles(), want.load.to_doubles());
  EXPECT_TRUE(testing::all_close(got.weights->value.to_doubles(), want.weights->value.to_doubles(),
                                 0.0, 1e-6));
}

TEST_F(CudaMoe, RouteMatchesCpuExactly) {
  std::vector<RouteCase> cases;
  for (int64_t num_experts : {4, 8, 64})
    for (int64_t k : {1, 2, 8})
      for (int64_t n : {1, 37, 1000})
        for (bool normalize : {false, true})
          if (k <= num_experts) cases.push_back({n, num_experts, k, normalize});
  // The largest batch: 65536 slots, 64 blocks of the counting sort (a multi-block scan).
  cases.push_back({8192, 64, 8, true});
  uint64_t seed = 100;
  int variant = 0;
  for (const RouteCase& c : cases) {
    for (DType dtype : {DType::f32, DType::bf16}) {
      const Tensor logits =
          testing::random_normal({c.n, c.num_experts}, ++seed, DType::f32, 1.5).to(dtype).to(DType::f32);
      // Scores are sigmoids in (0, 1); a 0.2-sized bias reorders many of them.
      const Tensor bias = testing::random_normal({c.num_experts}, ++seed, DType::f32, 0.2);
      if (c.n >= 37) {  // the bias must matter, or the test would not show it is applied
        ops::RouteResult plain =
            ops::moe_route(leaf(logits), Tensor::zeros({c.num_experts}, DType::f32), c.k);
        ops::RouteResult biased = ops::moe_route(leaf(logits), bias, c.k);
        EXPECT_NE(plain.indices.to_doubles(), biased.indices.to_doubles()) << describe(c, dtype);
      }
      expect_same_route(logits, bias, c, dtype, /*bias_on_host=*/++variant % 3 == 0);
    }
  }
}

TEST_F(CudaMoe, RouteBreaksTiesLikeTheCpu) {
  // Logits from a 4-value set (exact in bf16) make many exactly tied scores: every tie must go to
  // the lower expert index, on both backends. A quantized bias (0 or 0.25) adds ties of keys.
  uint64_t seed = 300;
  for (RouteCase c : {RouteCase{50, 64, 8, false}, RouteCase{64, 8, 3, true},
                      RouteCase{33, 4, 2, false}, RouteCase{40, 5, 1, false}}) {
    const std::vector<uint32_t> picks =
        testing::sample_ids(size_t(c.n * c.num_experts), 4, ++seed);
    const double levels[] = {-1.0, 0.0, 0.5, 2.0};
    std::vector<double> values;
    for (uint32_t pick : picks) values.push_back(levels[pick]);
    const Tensor logits = Tensor::from_values(values, {c.n, c.num_experts}, DType::f32);
    std::vector<double> bias_values;
    for (uint32_t pick : testing::sample_ids(size_t(c.num_experts), 2, ++seed))
      bias_values.push_back(0.25 * pick);
    for (const Tensor& bias : {Tensor::zeros({c.num_experts}, DType::f32),
                               Tensor::from_values(bias_values, {c.num_experts}, DType::f32)})
      for (DType dtype : {DType::f32, DType::bf16}) expect_same_route(logits, bias, c, dtype, false);
  }
  // The CPU suite's hand-made case: tokens 0 and 2 tie everywhere; token 1 ties 1/3 and 0/4.
  const Tensor logits = Tensor::from_values({0.5, 0.5, 0.5, 0.5, 0.5,    //
                                             -1.0, 2.0, 0.0, 2.0, -1.0,  //
                                             0.3, 0.3, 0.3, 0.3, 0.3},
                                            {3, 5}, DType::f32);
  ops::RouteResult top3 =
      ops::moe_route(leaf(logits.to(kGpu)), Tensor::zeros({5}, DType::f32, kGpu), 3);
  EXPECT_EQ(top3.indices.to_doubles(), (std::vector<double>{0, 1, 2, 1, 3, 2, 0, 1, 2}));
}

// moe_route as an op for expect_cuda_matches_cpu: the weights (differentiable) and every integer
// output; offsets and load (host tensors) are moved next to the others for the comparison.
std::vector<Var> route_outputs(const Var& logits, const Tensor& bias, int64_t k, bool normalize) {
  const Device device = logits->value.device();
  ops::RouteResult route = ops::moe_route(logits, bias.to(device), k, normalize);
  return {route.weights, leaf(route.indices), leaf(route.order), leaf(route.offsets.to(device)),
          leaf(route.load.to(device))};
}

TEST_F(CudaMoe, RouteGradientMatchesCpu) {
  uint64_t seed = 400;
  for (RouteCase c : {RouteCase{37, 8, 2, true}, RouteCase{37, 8, 2, false},
                      RouteCase{1, 4, 1, false}, RouteCase{1000, 64, 8, true},
                      RouteCase{300, 8, 1, false}}) {
    const Tensor logits = testing::random_normal({c.n, c.num_experts}, ++seed, DType::f32, 1.5);
    const Tensor bias = testing::random_normal({c.num_experts}, ++seed, DType::f32, 0.2);
    auto op = [&](const std::vector<Var>& in) {
      return route_outputs(in[0], bias, c.k, c.normalize);
    };
    // The router reads bf16 logits but computes, stores and differentiates in f32 on both sides
    // (the CPU sees the same rounded logits), so bf16 holds the f32 tolerance.
    for (DType dtype : {DType::f32, DType::bf16}) {
      SCOPED_TRACE(describe(c, dtype));
      testing::expect_cuda_matches_cpu(op, {OpInput{logits}}, dtype, 1e-5, ++seed);
    }
  }
}

struct RowCase {
  int64_t n, num_experts, k, d;
};

// Gather, combine and their chain at ragged and realistic shapes: d = 33 and 5 take the scalar /
// 2-byte paths, 64 and 2048 (the 1b preset's width) the 16-byte vector paths.
const RowCase kRowCases[] = {{37, 8, 2, 33}, {1, 4, 1, 5}, {1000, 64, 8, 64}, {300, 8, 1, 2048}};

TEST_F(CudaMoe, GatherMatchesCpu) {
  uint64_t seed = 500;
  for (const RowCase& c : kRowCases) {
    const Tensor x = testing::random_normal({c.n, c.d}, ++seed, DType::f32);
    const Tensor logits = testing::random_normal({c.n, c.num_experts}, ++seed, DType::f32, 1.5);
    const Tensor bias = testing::random_normal({c.num_experts}, ++seed, DType::f32, 0.2);
    auto op = [&](const std::vector<Var>& in) -> std::vector<Var> {
      ops::RouteResult route = ops::moe_route(in[1], bias.to(in[1]->value.device()), c.k);
      return {ops::moe_gather(in[0], route)};
    };
    const std::vector<OpInput> inputs = {OpInput{x},
                                         OpInput{logits, OpInput::Role::constant, false}};
    for (auto [dtype, rtol] : {std::pair{DType::f32, 1e-5}, std::pair{DType::bf16, 1e-2}}) {
      SCOPED_TRACE(str(dtype_name(dtype), " n=", c.n, " E=", c.num_experts, " k=", c.k, " d=", c.d));
      testing::expect_cuda_matches_cpu(op, inputs, dtype, rtol, ++seed);
    }
  }
}

TEST_F(CudaMoe, CombineMatchesCpu) {
  uint64_t seed = 600;
  for (const RowCase& c : kRowCases) {
    const Tensor ys = testing::random_normal({c.n * c.k, c.d}, ++seed, DType::f32);
    // The weights are f32 on both backends (as moe_route gives them), hence the parameter role.
    const Tensor weights = testing::random_uniform({c.n, c.k}, ++seed, 0.1, 0.9, DType::f32);
    const Tensor logits = testing::random_normal({c.n, c.num_experts}, ++seed, DType::f32, 1.5);
    const Tensor bias = testing::random_normal({c.num_experts}, ++seed, DType::f32, 0.2);
    auto op = [&](const std::vector<Var>& in) -> std::vector<Var> {
      ops::RouteResult route = ops::moe_route(in[2], bias.to(in[2]->value.device()), c.k);
      return {ops::moe_combine(in[0], in[1], route)};
    };
    const std::vector<OpInput> inputs = {OpInput{ys}, OpInput{weights, OpInput::Role::parameter},
                                         OpInput{logits, OpInput::Role::constant, false}};
    // f32: d_weights are dot products over d summed in another order than the CPU's loop; at
    // d <= 2048 that stays well inside 1e-5 of the values' rms.
    for (auto [dtype, rtol] : {std::pair{DType::f32, 1e-5}, std::pair{DType::bf16, 1e-2}}) {
      SCOPED_TRACE(str(dtype_name(dtype), " n=", c.n, " E=", c.num_experts, " k=", c.k, " d=", c.d));
      testing::expect_cuda_matches_cpu(op, inputs, dtype, rtol, ++seed);
    }
  }
}

// route -> gather -> (experts: the identity) -> combine with the route's own weights: what the MoE
// layer does, with gradients reaching x and the logits. With normalized weights the output is then
// x itself and the logits' gradient is exactly zero (only rounding noise to compare), so that case
// checks x's gradient alone; the MoE layer test below has real experts.
TEST_F(CudaMoe, RouteGatherCombineChainMatchesCpu) {
  uint64_t seed = 700;
  for (RouteCase c : {RouteCase{37, 8, 2, true}, RouteCase{200, 64, 8, false},
                      RouteCase{300, 8, 1, false}}) {
    const int64_t d = c.n == 37 ? 33 : 128;
    const Tensor x = testing::random_normal({c.n, d}, ++seed, DType::f32);
    const Tensor logits = testing::random_normal({c.n, c.num_experts}, ++seed, DType::f32, 1.5);
    const Tensor bias = testing::random_normal({c.num_experts}, ++seed, DType::f32, 0.2);
    auto op = [&](const std::vector<Var>& in) -> std::vector<Var> {
      ops::RouteResult route =
          ops::moe_route(in[1], bias.to(in[1]->value.device()), c.k, c.normalize);
      return {ops::moe_combine(ops::moe_gather(in[0], route), route.weights, route)};
    };
    for (auto [dtype, rtol] : {std::pair{DType::f32, 1e-5}, std::pair{DType::bf16, 1e-2}}) {
      SCOPED_TRACE(describe(c, dtype));
      const OpInput logits_input{logits, OpInput::Role::activation, /*requires_grad=*/!c.normalize};
      testing::expect_cuda_matches_cpu(op, {OpInput{x}, logits_input}, dtype, rtol, ++seed);
    }
  }
}

TEST_F(CudaMoe, BiasUpdateMatchesCpuExactly) {
  struct Case {
    std::vector<double> load;
    double rate;
  };
  std::vector<Case> cases = {{{2, 5, 3, 2}, 1e-3},        // expert 2 sits exactly on the mean
                             {{0, 4, 2, 3, 3}, 0.5}};     // a non-integer mean
  std::vector<double> wide;
  for (uint32_t count : testing::sample_ids(64, 300, 801)) wide.push_back(double(count));
  cases.push_back({wide, 1e-3});
  uint64_t seed = 800;
  for (const Case& c : cases) {
    const int64_t num_experts = int64_t(c.load.size());
    const Tensor start = testing::random_normal({num_experts}, ++seed, DType::f32, 0.1);
    const Tensor load = Tensor::from_values(c.load, {num_experts}, DType::i64);
    Tensor want = start.clone();
    ops::moe_bias_update(want, load, c.rate);
    for (bool load_on_host : {true, false}) {
      Tensor got = start.to(kGpu);
      ops::moe_bias_update(got, load_on_host ? load : load.to(kGpu), c.rate);
      ASSERT_TRUE(got.device().is_cuda());
      EXPECT_EQ(got.to_doubles(), want.to_doubles()) << "E=" << num_experts << " load on "
                                                     << (load_on_host ? "host" : "device");
    }
  }
  // Fed straight from a GPU route's load (a host tensor).
  const Tensor logits = testing::random_normal({301, 8}, 890, DType::f32);
  Tensor gpu_bias = Tensor::zeros({8}, DType::f32, kGpu), cpu_bias = Tensor::zeros({8}, DType::f32);
  ops::RouteResult route = ops::moe_route(leaf(logits.to(kGpu)), gpu_bias, 2);
  ops::moe_bias_update(gpu_bias, route.load);
  ops::moe_bias_update(cpu_bias, ops::moe_route(leaf(logits), cpu_bias, 2).load);
  EXPECT_EQ(gpu_bias.to_doubles(), cpu_bias.to_doubles());
}

// The route in dense form: row t holds weights[t, j] at expert indices[t, j], zero elsewhere.
std::vector<double> scatter_route(const ops::RouteResult& route, int64_t num_experts) {
  const std::vector<double> indices = route.indices.to_doubles(),
                            weights = route.weights->value.to_doubles();
  const int64_t n = route.indices.size(0), k = route.indices.size(1);
  std::vector<double> dense(size_t(n * num_experts), 0.0);
  for (int64_t t = 0; t < n; ++t)
    for (int64_t j = 0; j < k; ++j)
      dense[size_t(t * num_experts + int64_t(indices[size_t(t * k + j)]))] =
          weights[size_t(t * k + j)];
  return dense;
}

// Dense gates from host logits (f32, already rounded to `dtype`): on the GPU in `dtype` they equal
// the GPU router's own weights at its indices bit for bit (one selection routine), and the CPU's
// gates with the same zero pattern (the same decisions) and values within 1e-6.
void expect_same_gates(const Tensor& logits, const Tensor& bias, const RouteCase& c, DType dtype,
                       bool bias_on_host) {
  SCOPED_TRACE(describe(c, dtype) + (bias_on_host ? " (host bias)" : ""));
  const Tensor gpu_logits = logits.to(dtype).to(kGpu), gpu_bias = bias_on_host ? bias : bias.to(kGpu);
  const Tensor gates = ops::moe_dense_gates(gpu_logits, gpu_bias, c.k, c.normalize);
  ASSERT_TRUE(gates.device().is_cuda());
  EXPECT_EQ(gates.dtype(), DType::f32);
  ASSERT_EQ(gates.shape(), (Shape{c.n, c.num_experts}));
  const std::vector<double> got = gates.to_doubles();
  EXPECT_EQ(got, scatter_route(ops::moe_route(leaf(gpu_logits), gpu_bias, c.k, c.normalize),
                               c.num_experts));
  const std::vector<double> want = ops::moe_dense_gates(logits, bias, c.k, c.normalize).to_doubles();
  ASSERT_EQ(got.size(), want.size());
  for (size_t i = 0; i < got.size(); ++i)
    ASSERT_EQ(got[i] == 0.0, want[i] == 0.0) << "token " << i / size_t(c.num_experts) << " expert "
                                             << i % size_t(c.num_experts);
  EXPECT_TRUE(testing::all_close(got, want, 0.0, 1e-6));
}

TEST_F(CudaMoe, DenseGatesMatchRouterAndCpu) {
  std::vector<RouteCase> cases;
  for (int64_t num_experts : {4, 5, 8, 64})
    for (int64_t k : {1, 2})
      for (int64_t n : {1, 3, 8, 37, 1000})
        for (bool normalize : {false, true}) cases.push_back({n, num_experts, k, normalize});
  uint64_t seed = 900;
  int variant = 0;
  for (const RouteCase& c : cases)
    for (DType dtype : {DType::f32, DType::bf16}) {
      const Tensor logits =
          testing::random_normal({c.n, c.num_experts}, ++seed, DType::f32, 1.5).to(dtype).to(DType::f32);
      const Tensor bias = testing::random_normal({c.num_experts}, ++seed, DType::f32, 0.2);
      expect_same_gates(logits, bias, c, dtype, /*bias_on_host=*/++variant % 3 == 0);
    }
  // Exact ties (logits from 4 values, a bias of 0 or 0.25) go to the lower expert, as in the router.
  for (RouteCase c : {RouteCase{50, 64, 2, false}, RouteCase{33, 8, 2, true}, RouteCase{40, 5, 1, false}}) {
    const double levels[] = {-1.0, 0.0, 0.5, 2.0};
    std::vector<double> values, bias_values;
    for (uint32_t pick : testing::sample_ids(size_t(c.n * c.num_experts), 4, ++seed))
      values.push_back(levels[pick]);
    for (uint32_t pick : testing::sample_ids(size_t(c.num_experts), 2, ++seed))
      bias_values.push_back(0.25 * pick);
    const Tensor logits = Tensor::from_values(values, {c.n, c.num_experts}, DType::f32);
    const Tensor bias = Tensor::from_values(bias_values, {c.num_experts}, DType::f32);
    for (DType dtype : {DType::f32, DType::bf16}) expect_same_gates(logits, bias, c, dtype, false);
  }
}

// The gated sum over expert-major stacked outputs, gates from the router (mostly zero): f32 and
// bf16 ys against the CPU on the same rounded values, at decode sizes and a realistic width; the
// unselected experts' rows hold NaN, which must not reach the output (they are never read).
TEST_F(CudaMoe, DenseCombineMatchesCpu) {
  struct Case {
    int64_t n, num_experts, k, d;
  };
  uint64_t seed = 1000;
  for (Case c : {Case{1, 8, 1, 2048}, Case{3, 64, 2, 64}, Case{8, 8, 2, 33}, Case{37, 5, 1, 5},
                 Case{300, 8, 2, 1000}}) {
    const Tensor logits = testing::random_normal({c.n, c.num_experts}, ++seed, DType::f32, 1.5);
    const Tensor bias = testing::random_normal({c.num_experts}, ++seed, DType::f32, 0.2);
    const Tensor gates = ops::moe_dense_gates(logits, bias, c.k, /*normalize=*/c.k == 2);
    const std::vector<double> g = gates.to_doubles();
    for (auto [dtype, rtol] : {std::pair{DType::bf16, 1e-2}, std::pair{DType::f32, 1e-5}}) {
      SCOPED_TRACE(str(dtype_name(dtype), " n=", c.n, " E=", c.num_experts, " k=", c.k, " d=", c.d));
      Tensor ys = testing::random_normal({c.num_experts * c.n, c.d}, ++seed, DType::f32).to(dtype).to(DType::f32);
      const Tensor want = ops::moe_dense_combine(ys, gates);
      for (int64_t e = 0; e < c.num_experts; ++e)
        for (int64_t t = 0; t < c.n; ++t)
          if (g[size_t(t * c.num_experts + e)] == 0) ys.narrow(0, e * c.n + t, 1).fill_(std::nan(""));
      const Tensor got = ops::moe_dense_combine(ys.to(dtype).to(kGpu), gates.to(kGpu));
      ASSERT_TRUE(got.device().is_cuda());
      EXPECT_EQ(got.dtype(), dtype);
      EXPECT_EQ(got.shape(), (Shape{c.n, c.d}));
      EXPECT_TRUE(testing::close_to_reference(got.to_doubles(), want.to_doubles(), rtol));
    }
  }
}

// The whole MoE FFN (shared expert + top-2 of 8, layers/ffn.h) built with the same parameters on
// both backends, a nonzero routing bias, output and every parameter gradient in f32, then the
// bias update from the forward's load. Needs the CUDA linear / swiglu / layout / add ops too.
TEST_F(CudaMoe, MoeLayerMatchesCpuInFp32) {
  const int64_t d_model = 64;
  FfnConfig config;
  config.kind = FfnConfig::Kind::moe;
  config.d_ffn = 96;
  config.n_experts = 8;
  config.top_k = 2;
  auto build = [&](Device device) {
    auto layer = std::make_unique<MoE>(d_model, config, TensorOptions{device, DType::f32}, 0.02,
                                       0.01);
    Generator generator(31);
    layer->initialize(generator);  // drawn on the host: the same values on every device
    Tensor bias = layer->routing_bias();  // a handle to the layer's buffer
    bias.copy_from(testing::random_normal({config.n_experts}, 32, DType::f32, 0.02));
    return layer;
  };
  auto cpu = build(Device::cpu());
  auto gpu = build(kGpu);
  const Tensor x = testing::random_normal({2, 25, d_model}, 33, DType::f32);
  Var cpu_x = leaf(x.clone(), true), gpu_x = leaf(x.to(kGpu), true);
  Var want = cpu->forward(cpu_x);
  Var got = gpu->forward(gpu_x);
  ASSERT_TRUE(got->value.device().is_cuda());
  // GEMM summation orders differ between cuBLAS and the CPU: the model suite's 1e-4.
  EXPECT_TRUE(testing::close_to_reference(got->value.to_doubles(), want->value.to_doubles(), 1e-4));
  const Tensor seed_gradient = testing::random_normal(want->value.shape(), 34, DType::f32);
  autograd::backward({want}, {seed_gradient});
  autograd::backward({got}, {seed_gradient.to(kGpu)});
  EXPECT_TRUE(testing::close_to_reference(gpu_x->grad.to_doubles(), cpu_x->grad.to_doubles(), 1e-4))
      << "d_x";
  const std::vector<Parameter> cpu_params = cpu->named_parameters(),
                               gpu_params = gpu->named_parameters();
  ASSERT_EQ(cpu_params.size(), gpu_params.size());
  for (size_t i = 0; i < cpu_params.size(); ++i) {
    const Tensor& expected = cpu_params[i].variable->grad;
    const Tensor& actual = gpu_params[i].variable->grad;
    ASSERT_EQ(expected.defined(), actual.defined()) << cpu_params[i].name;
    if (!expected.defined()) continue;  // an expert no token chose
    EXPECT_TRUE(actual.device().is_cuda()) << cpu_params[i].name;
    EXPECT_TRUE(testing::close_to_reference(actual.to_doubles(), expected.to_doubles(), 1e-4))
        << cpu_params[i].name;
  }
  EXPECT_EQ(gpu->load_since_update().to_doubles(), cpu->load_since_update().to_doubles());
  cpu->update_routing_bias();
  gpu->update_routing_bias();
  EXPECT_EQ(gpu->routing_bias().to_doubles(), cpu->routing_bias().to_doubles());
}

// The MoE FFN's decode step (dense gates over every expert, top-1 and top-2 of 8) on the GPU against
// the CPU module's routed forward with the same parameters and a nonzero routing bias, in f32.
TEST_F(CudaMoe, MoeLayerDecodeStepMatchesCpuRoutedForward) {
  const int64_t d_model = 64;
  for (int64_t top_k : {1, 2}) {
    FfnConfig config;
    config.kind = FfnConfig::Kind::moe;
    config.d_ffn = 96;
    config.n_experts = 8;
    config.top_k = top_k;
    auto build = [&](Device device) {
      auto layer = std::make_unique<MoE>(d_model, config, TensorOptions{device, DType::f32}, 0.05,
                                         0.02);
      Generator generator(41 + uint64_t(top_k));
      layer->initialize(generator);
      Tensor bias = layer->routing_bias();
      bias.copy_from(testing::random_normal({config.n_experts}, 42, DType::f32, 0.02));
      return layer;
    };
    auto cpu = build(Device::cpu());
    auto gpu = build(kGpu);
    autograd::NoGradScope no_grad;
    for (int64_t batch : {1, 5}) {
      SCOPED_TRACE(str("top_k ", top_k, " batch ", batch));
      const Tensor x = testing::random_normal({batch, 1, d_model}, 43 + uint64_t(batch), DType::f32);
      const Tensor want = cpu->forward(leaf(x))->value;
      const Tensor got = gpu->forward_inference(leaf(x.to(kGpu)), InferenceStep{})->value;
      ASSERT_TRUE(got.device().is_cuda());
      EXPECT_EQ(got.shape(), want.shape());
      EXPECT_TRUE(testing::close_to_reference(got.to_doubles(), want.to_doubles(), 1e-4));
    }
  }
}

}  // namespace
}  // namespace braid
