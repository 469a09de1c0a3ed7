// The model graph as a whole: gradient checks of a micro model of every family, every intra-hybrid
// axis option and MoE (double precision, against central differences of the loss), parameter counts
// of every preset against the cost formula, and initialization.
#include <cmath>

#include "autograd/gradcheck.h"
#include "autograd/tape.h"
#include "layers/cost_model.h"
#include "layers/hybrid_lm.h"
#include "tests/micro_model.h"
#include "tests/test_util.h"

namespace braid {
namespace {

using autograd::Var;
using Intra = IntraHybridConfig;
using testing::micro_config;


// Gradcheck of the mean loss with respect to every parameter of the model.
void expect_model_gradients(const ModelConfig& config, uint64_t seed) {
  SCOPED_TRACE(config.name);
  HybridLM model(config, {Device::cpu(), DType::f64});
  Generator generator(seed);
  model.initialize(generator);
  const int64_t batch = 2, time = 6;
  Tensor tokens = Tensor::empty({batch, time + 1}, DType::f64);
  fill_uniform(tokens, seed + 1, 0, 0, double(config.vocab_size));
  Tensor ids_and_targets = tokens.to(DType::i32);
  Var ids = autograd::leaf(ids_and_targets.narrow(1, 0, time).contiguous());
  Var targets = autograd::leaf(ids_and_targets.narrow(1, 1, time).contiguous());
  std::vector<Var> parameters;
  for (const Parameter& parameter : model.named_parameters()) {
    parameter.variable->name = parameter.name;
    parameters.push_back(parameter.variable);
  }
  auto result = autograd::gradcheck_leaves([&] { return model.loss(ids, targets); }, parameters);
  EXPECT_TRUE(result.ok) << result.report;
  EXPECT_EQ(result.elements_checked, model.parameter_count());
}

TEST(ModelGradcheck, EveryFamily) {
  const std::vector<std::string> patterns = {"TT", "WT", "MM", "TM", "MH", "HW"};
  for (size_t i = 0; i < patterns.size(); ++i) expect_model_gradients(micro_config(patterns[i]), 100 + i);
}

TEST(ModelGradcheck, EveryIntraHybridAxis) {
  struct Variant {
    const char* name;
    void (*apply)(Intra&);
  };
  const Variant variants[] = {
      {"norm none", [](Intra& c) { c.norm = Intra::Norm::none; }},
      {"scaling vector", [](Intra& c) { c.scaling = Intra::Scaling::vector; }},
      {"scaling scalar", [](Intra& c) { c.scaling = Intra::Scaling::scalar; }},
      {"scaling gate", [](Intra& c) { c.scaling = Intra::Scaling::gate; }},
      {"fusion add", [](Intra& c) { c.fusion = Intra::Fusion::add; }},
      {"joint subtract", [](Intra& c) { c.output = Intra::Output::joint; }},
      {"joint add", [](Intra& c) { c.output = Intra::Output::joint; c.fusion = Intra::Fusion::add; }},
      {"joint concat", [](Intra& c) { c.output = Intra::Output::joint; c.fusion = Intra::Fusion::concat; }},
      {"value sharing", [](Intra& c) { c.value_sharing = Intra::ValueSharing::shared; }},
      {"gqa 2:1", [](Intra& c) { c.n_kv_heads = 1; }},
  };
  uint64_t seed = 200;
  for (const Variant& variant : variants) {
    ModelConfig config = micro_config("H");
    config.name = std::string("micro-H ") + variant.name;
    variant.apply(config.intra);
    expect_model_gradients(config, seed++);
  }
}

TEST(ModelGradcheck, MoE) {
  for (const std::string pattern : {"TM", "H"}) {
    ModelConfig config = micro_config(pattern);
    config.ffn.kind = FfnConfig::Kind::moe;
    config.name += " moe";
    expect_model_gradients(config, 300);
  }
  ModelConfig top2 = micro_config("M");
  top2.ffn.kind = FfnConfig::Kind::moe;
  top2.ffn.top_k = 2;
  top2.name += " moe top-2";
  expect_model_gradients(top2, 301);
}

TEST(ModelGradcheck, RecomputeGivesTheSameGradients) {
  ModelConfig config = micro_config("TMH");
  HybridLM plain(config, {Device::cpu(), DType::f64}), recomputed(config, {Device::cpu(), DType::f64});
  Generator g1(7), g2(7);
  plain.initialize(g1);
  recomputed.initialize(g2);
  recomputed.set_recompute(true);
  Tensor tokens = Tensor::empty({1, 9}, DType::f64);
  fill_uniform(tokens, 8, 0, 0, 11);
  Tensor ints = tokens.to(DType::i32);
  Var ids = autograd::leaf(ints.narrow(1, 0, 8).contiguous()), targets = autograd::leaf(ints.narrow(1, 1, 8).contiguous());
  autograd::backward(plain.loss(ids, targets));
  autograd::backward(recomputed.loss(ids, targets));
  std::vector<Var> a = plain.parameters(), b = recomputed.parameters();
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) EXPECT_TRUE(testing::all_close(b[i]->grad, a[i]->grad.to_doubles(), 1e-12, 1e-14));
}

}  // namespace
}  // namespace braid

namespace braid {
namespace {

// The modules' actual parameters against the cost model's formula, for every preset, dense and MoE.
// Built in bf16 and never initialized: only the shapes matter, and untouched pages cost no memory.
TEST(ModelPresets, CountedParametersEqualTheFormula) {
  int checked = 0;
  for (const char* scale : {"tiny", "100m", "350m", "1b", "3b"}) {
    for (const char* family : {"llama", "mamba", "swa-1to5", "inter-1to1", "inter-1to3", "inter-1to5",
                               "inter-1to12", "intra-1to5", "intra-1to1", "hymba-like", "falconh1-like"}) {
      for (bool moe : {false, true}) {
        ModelConfig config = load_model_config(std::string("configs/models/") + scale + "/" + family + ".json");
        if (moe) config.ffn.kind = FfnConfig::Kind::moe;
        SCOPED_TRACE(config.name + (moe ? " moe" : ""));
        HybridLM model(config, {Device::cpu(), DType::bf16});
        const ModelCost cost = model_cost(config, 8192);
        EXPECT_EQ(model.parameter_count(), cost.params);
        int64_t per_layer = 0;
        for (const Parameter& parameter : model.named_parameters())
          if (parameter.name.rfind("layers.0.", 0) == 0) per_layer += parameter.variable->value.numel();
        EXPECT_EQ(per_layer, cost.layers[0].mixer_params + cost.layers[0].ffn_params);
        ++checked;
      }
    }
  }
  EXPECT_EQ(checked, 110);
}

}  // namespace
}  // namespace braid

namespace braid {
namespace {

// Initialization per MODEL.md section 3 and the documented matrix std: A in [0.01, 2], dt in
// [1e-3, 0.1], D = 1, norms 1; matrices N(0, 0.02), output projections N(0, 0.02 / sqrt(2 L)); the
// same seed gives the same model.
TEST(ModelInit, FollowsTheSpecification) {
  ModelConfig config = load_model_config("configs/models/tiny/intra-1to5.json");
  HybridLM model(config, {Device::cpu(), DType::f32}), again(config, {Device::cpu(), DType::f32});
  Generator g1(11), g2(11);
  model.initialize(g1);
  again.initialize(g2);
  auto stddev = [](const std::vector<double>& v) {
    double sum = 0, squares = 0;
    for (double x : v) sum += x, squares += x * x;
    const double mean = sum / double(v.size());
    return std::sqrt(squares / double(v.size()) - mean * mean);
  };
  const double output_std = 0.02 / std::sqrt(2.0 * double(config.n_layers()));
  std::vector<Parameter> a = model.named_parameters(), b = again.named_parameters();
  for (size_t i = 0; i < a.size(); ++i) {
    const std::string& name = a[i].name;
    const std::vector<double> values = a[i].variable->value.to_doubles();
    EXPECT_EQ(values, b[i].variable->value.to_doubles()) << name;
    auto ends_with = [&](const std::string& suffix) {
      return name.size() >= suffix.size() && name.compare(name.size() - suffix.size(), suffix.size(), suffix) == 0;
    };
    if (ends_with("A_log")) {
      for (double v : values) EXPECT_TRUE(std::exp(v) >= 0.01 - 1e-6 && std::exp(v) <= 2.0 + 1e-6) << name;
    } else if (ends_with("dt_bias")) {
      for (double v : values) {
        const double dt = std::log1p(std::exp(v));
        EXPECT_TRUE(dt >= 1e-3 * (1 - 1e-5) && dt <= 0.1 * (1 + 1e-5)) << name << " dt " << dt;
      }
    } else if (ends_with(".D") || ends_with("norm.weight") || ends_with("norm_attn.weight") ||
               ends_with("norm_ssm.weight")) {
      for (double v : values) EXPECT_EQ(v, 1.0) << name;
    } else if (values.size() >= 4096 && (ends_with("o_proj.weight") || ends_with("out_proj.weight") ||
                                         ends_with("down_proj.weight") || ends_with("out_ssm.weight") ||
                                         ends_with("out_attn.weight"))) {
      EXPECT_NEAR(stddev(values), output_std, 0.1 * output_std) << name;
    } else if (values.size() >= 4096 && ends_with("proj.weight")) {
      EXPECT_NEAR(stddev(values), 0.02, 0.002) << name;
    }
  }
}

}  // namespace
}  // namespace braid
