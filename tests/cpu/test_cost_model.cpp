// The cost model (MODEL.md section 7): the paper's cache and parameter figures for the 1B presets, a
// hand-worked FLOPs/cache example, an independent recount of the parameter layout for every preset,
// the FLOP-matched token budget, and the describe() table.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include <cstdio>
#include <filesystem>
#include <sstream>

#include "layers/cost_model.h"
#include "runtime/error.h"

namespace braid {
namespace {

namespace fs = std::filesystem;

constexpr double kMiB = 1024.0 * 1024.0;

fs::path models_dir() {
  for (fs::path dir = fs::current_path(); !dir.empty(); dir = dir.parent_path()) {
    if (fs::is_directory(dir / "configs" / "models")) return dir / "configs" / "models";
    if (dir == dir.parent_path()) break;
  }
  ADD_FAILURE() << "configs/models not found above " << fs::current_path();
  return {};
}

ModelConfig preset(const std::string& scale, const std::string& family) {
  return load_model_config((models_dir() / scale / (family + ".json")).string());
}

// ---------------------------------------------------------------------------------------------------
// The paper's figures.

TEST(CostModel, PaperCacheFigures) {
  const ModelCost llama = model_cost(preset("1b", "llama"), 8192);
  EXPECT_EQ(llama.cache_bytes, 256.0 * kMiB);

  const ModelCost mamba = model_cost(preset("1b", "mamba"), 8192);
  EXPECT_NEAR(mamba.cache_bytes / kMiB, 13.43, 0.005);
  EXPECT_EQ(model_cost(preset("1b", "mamba"), 32768).cache_bytes, mamba.cache_bytes);  // independent of L

  const ModelCost intra = model_cost(preset("1b", "intra-1to5"), 8192);
  std::printf("1b intra-1to5: %.4g non-embedding params, cache %.2f MiB at 8K\n", double(intra.non_embedding_params),
              intra.cache_bytes / kMiB);
  EXPECT_NEAR(double(intra.non_embedding_params), 0.98e9, 0.01 * 0.98e9);
  EXPECT_NEAR(intra.cache_bytes / kMiB, 38.0, 1.0);
}

TEST(CostModel, FlopMatchedTokenBudget) {
  const ModelCost llama = model_cost(preset("1b", "llama"), 8192);
  const double tokens = tokens_for_flop_budget(llama, 4.5e20);
  std::printf("1b llama: %.4g FLOPs/token, %.4g tokens for 4.5e20 FLOPs (paper: 60B)\n", llama.flops_per_token,
              tokens);
  EXPECT_NEAR(tokens, 60e9, 0.15 * 60e9);
  // A cheaper architecture gets more tokens for the same budget.
  EXPECT_GT(tokens_for_flop_budget(model_cost(preset("1b", "intra-1to5"), 8192), 4.5e20), tokens);
}

// ---------------------------------------------------------------------------------------------------
// A hand-worked example: every number below is written out from the formulas of MODEL.md section 7
// and the parameter layout, with small dims.

ModelConfig hand_config() {
  return parse_model_config(R"({
    "vocab_size": 11, "d_model": 8, "pattern": "TMWH",
    "attention": {"n_heads": 2, "n_kv_heads": 1, "head_dim": 4},
    "sliding_window": {"window": 3, "sink": 1},
    "mamba": {"d_ssm": 16, "head_dim": 4, "d_state": 2, "n_groups": 1, "conv_width": 4},
    "intra": {"n_heads": 2, "n_kv_heads": 1, "qk_dim": 4, "v_dim": 8, "d_ssm": 8, "mamba_head_dim": 4,
              "d_state": 2, "norm": "group", "scaling": "none", "fusion": "subtract", "output": "separate"},
    "ffn": {"d_ffn": 12}
  })", "hand.json");
}

TEST(CostModel, HandWorkedExample) {
  const ModelCost cost = model_cost(hand_config(), 10);
  // T and W mixer: q 8·8 + k 4·8 + v 4·8 + o 8·8 + norm 8 = 200.
  // M mixer (H = 4 heads): in_proj (16+16+2+2+4)·8 = 320, conv 20·4 + 20 = 100, dt_bias/A_log/D 12,
  //   gated norm 16, out_proj 8·16 = 128, norm 8: 584.
  // H mixer: q 4·8 = 32, k 1·2·8 = 16, v 1·4·8 = 32, ssm in_proj (8+8+2+2+2)·8 = 176, conv 12·4 + 12 = 60,
  //   3·2 = 6, group norms 2·(8+8) = 32, separate outputs 8·8 + 8·8 = 128, norm 8: 490.
  // FFN: 3·8·12 + norm 8 = 296.
  const int64_t mixer[4] = {200, 584, 200, 490};
  // Extra FLOPs at L = 10: T 12·8·11/2 = 528; M 3·(9·16·2 + 2·16) = 960; W with w = min(10, 3+1) = 4:
  // 12·8·5/2 = 240; H 6·(4+8)·11/2 + 3·(9·8·2 + 2·8) = 396 + 480 = 876.
  const double extra[4] = {528, 960, 240, 876};
  // Cache: T 4·4·1·10 = 160; M 2·(16·2 + 4·(2·2 + 16)) = 224; W 4·4·1·4 = 64;
  // H 2·(2+4)·1·10 + 2·(8·2 + 4·(2·2 + 8)) = 120 + 128 = 248.
  const double cache[4] = {160, 224, 64, 248};
  ASSERT_EQ(cost.layers.size(), 4u);
  for (int i = 0; i < 4; ++i) {
    SCOPED_TRACE(i);
    EXPECT_EQ(cost.layers[size_t(i)].index, i);
    EXPECT_EQ(cost.layers[size_t(i)].kind, "TMWH"[i]);
    EXPECT_EQ(cost.layers[size_t(i)].mixer_params, mixer[i]);
    EXPECT_EQ(cost.layers[size_t(i)].ffn_params, 296);
    EXPECT_EQ(cost.layers[size_t(i)].flops_per_token, 6.0 * double(mixer[i] + 296) + extra[i]);
    EXPECT_EQ(cost.layers[size_t(i)].cache_bytes, cache[i]);
  }
  EXPECT_EQ(cost.non_embedding_params, 200 + 584 + 200 + 490 + 4 * 296 + 8);  // 2666 with the final norm
  EXPECT_EQ(cost.embedding_params, 88);
  EXPECT_EQ(cost.params, 2666 + 88);
  EXPECT_EQ(cost.flops_per_token, 6.0 * 2666 + 528 + 960 + 240 + 876);  // 18600
  EXPECT_EQ(cost.cache_bytes, 696.0);
  EXPECT_EQ(cost.context, 10);
  EXPECT_EQ(tokens_for_flop_budget(cost, 18600.0 * 1000), 1000.0);
}

TEST(CostModel, HandWorkedMoe) {
  ModelConfig config = hand_config();
  config.ffn.kind = FfnConfig::Kind::moe;
  config.ffn.n_experts = 4;
  config.ffn.top_k = 2;
  const ModelCost cost = model_cost(config, 10);
  // Experts of width 12/2 = 6: 3·8·6 = 144 each. All: shared + 4 routed + router 4·8 + norm 8 = 760.
  // Active: shared + top 2 + router + norm = 3·144 + 32 + 8 = 472.
  EXPECT_EQ(cost.layers[0].ffn_params, 760);
  EXPECT_EQ(cost.non_embedding_params, 1474 + 4 * 760 + 8);
  EXPECT_EQ(cost.flops_per_token, 6.0 * (1474 + 4 * 472 + 8) + 2604);
}

// ---------------------------------------------------------------------------------------------------
// An independent recount: the parameter tensors of the layout contract, listed by name and shape.

using Shapes = std::vector<std::pair<std::string, std::vector<int64_t>>>;

Shapes contract_parameters(const ModelConfig& config) {
  const int64_t d = config.d_model;
  Shapes shapes;
  auto add = [&](const std::string& name, std::vector<int64_t> shape) { shapes.emplace_back(name, shape); };
  add("embed.weight", {config.vocab_size, d});
  add("final_norm.weight", {d});
  for (int64_t i = 0; i < config.n_layers(); ++i) {
    const std::string layer = "layers." + std::to_string(i) + ".", mixer = layer + "mixer.";
    add(layer + "mixer_norm.weight", {d});
    add(layer + "ffn_norm.weight", {d});
    const char kind = config.pattern[size_t(i)];
    const int64_t G = config.mamba.n_groups, W = config.mamba.conv_width;
    if (kind == 'T' || kind == 'W') {
      const int64_t hq = config.attention.n_heads, hk = config.attention.n_kv_heads, dh = config.attention.head_dim;
      add(mixer + "q_proj.weight", {hq * dh, d});
      add(mixer + "k_proj.weight", {hk * dh, d});
      add(mixer + "v_proj.weight", {hk * dh, d});
      add(mixer + "o_proj.weight", {d, hq * dh});
    } else if (kind == 'M') {
      const int64_t di = config.mamba.d_ssm, n = config.mamba.d_state, h = di / config.mamba.head_dim;
      add(mixer + "in_proj.weight", {2 * di + 2 * G * n + h, d});
      add(mixer + "conv.weight", {di + 2 * G * n, W});
      add(mixer + "conv.bias", {di + 2 * G * n});
      add(mixer + "dt_bias", {h});
      add(mixer + "A_log", {h});
      add(mixer + "D", {h});
      add(mixer + "norm.weight", {di});
      add(mixer + "out_proj.weight", {d, di});
    } else {
      using Intra = IntraHybridConfig;
      const Intra& intra = config.intra;
      const int64_t ha = intra.n_heads, hk = intra.n_kv_heads, qk_head = intra.qk_dim / ha, v_head = intra.v_dim / ha;
      const int64_t di = intra.d_ssm, n = intra.d_state, h = di / intra.mamba_head_dim, v = intra.v_dim;
      add(mixer + "attn.q_proj.weight", {intra.qk_dim, d});
      add(mixer + "attn.k_proj.weight", {hk * qk_head, d});
      add(mixer + "attn.v_proj.weight", {hk * v_head, d});
      const bool shared = intra.value_sharing == Intra::ValueSharing::shared;
      add(mixer + "ssm.in_proj.weight", {(shared ? di : 2 * di) + 2 * G * n + h, d});
      add(mixer + "ssm.conv.weight", {di + 2 * G * n, W});
      add(mixer + "ssm.conv.bias", {di + 2 * G * n});
      add(mixer + "ssm.dt_bias", {h});
      add(mixer + "ssm.A_log", {h});
      add(mixer + "ssm.D", {h});
      if (intra.norm == Intra::Norm::group) {
        add(mixer + "norm_attn.weight", {v});
        add(mixer + "norm_attn.bias", {v});
        add(mixer + "norm_ssm.weight", {di});
        add(mixer + "norm_ssm.bias", {di});
      }
      if (intra.scaling == Intra::Scaling::vector) {
        add(mixer + "scale_attn", {v});
        add(mixer + "scale_ssm", {di});
      } else if (intra.scaling == Intra::Scaling::scalar) {
        add(mixer + "scale_attn", {1});
      } else if (intra.scaling == Intra::Scaling::gate) {
        add(mixer + "gate_proj.weight", {v + di, d});
      }
      if (intra.output == Intra::Output::separate) {
        add(mixer + "out_ssm.weight", {d, di});
        add(mixer + "out_attn.weight", {d, v});
      } else {
        add(mixer + "out_proj.weight", {d, intra.fusion == Intra::Fusion::concat ? di + v : di});
      }
    }
    const std::string ffn = layer + "ffn.";
    const int64_t f = config.ffn.d_ffn;
    if (config.ffn.kind == FfnConfig::Kind::dense) {
      add(ffn + "gate_proj.weight", {f, d});
      add(ffn + "up_proj.weight", {f, d});
      add(ffn + "down_proj.weight", {d, f});
    } else {
      const int64_t fe = f / 2;
      for (int64_t e = -1; e < config.ffn.n_experts; ++e) {
        const std::string expert = ffn + (e < 0 ? "shared." : "experts." + std::to_string(e) + ".");
        add(expert + "gate_proj.weight", {fe, d});
        add(expert + "up_proj.weight", {fe, d});
        add(expert + "down_proj.weight", {d, fe});
      }
      add(ffn + "router.weight", {config.ffn.n_experts, d});
    }
  }
  return shapes;
}

int64_t numel(const std::vector<int64_t>& shape) {
  int64_t count = 1;
  for (int64_t size : shape) count *= size;
  return count;
}

void expect_counts_match(const ModelConfig& config) {
  const ModelCost cost = model_cost(config, 4096);
  std::vector<int64_t> mixer(size_t(config.n_layers())), ffn(size_t(config.n_layers()));
  int64_t total = 0, embedding = 0;
  for (const auto& [name, shape] : contract_parameters(config)) {
    total += numel(shape);
    if (name == "embed.weight") embedding += numel(shape);
    if (name.rfind("layers.", 0) != 0) continue;
    const size_t dot = name.find('.', 7);
    const size_t layer = std::stoul(name.substr(7, dot - 7));
    const std::string part = name.substr(dot + 1);
    (part.rfind("mixer", 0) == 0 ? mixer : ffn)[layer] += numel(shape);  // mixer.*, mixer_norm vs ffn.*, ffn_norm
  }
  EXPECT_EQ(cost.params, total);
  EXPECT_EQ(cost.embedding_params, embedding);
  EXPECT_EQ(cost.non_embedding_params, total - embedding);
  for (size_t i = 0; i < cost.layers.size(); ++i) {
    EXPECT_EQ(cost.layers[i].mixer_params, mixer[i]) << "layer " << i;
    EXPECT_EQ(cost.layers[i].ffn_params, ffn[i]) << "layer " << i;
  }
}

TEST(CostModel, ParameterCountsMatchTheLayoutForEveryPreset) {
  for (const char* scale : {"tiny", "100m", "350m", "1b", "3b"})
    for (const char* family : {"llama", "mamba", "swa-1to5", "inter-1to1", "inter-1to3", "inter-1to5",
                                      "inter-1to12", "intra-1to5", "intra-1to1", "hymba-like", "falconh1-like"}) {
      SCOPED_TRACE(std::string(scale) + "/" + family);
      ModelConfig config = preset(scale, family);
      expect_counts_match(config);
      config.ffn.kind = FfnConfig::Kind::moe;
      expect_counts_match(config);
    }
}

TEST(CostModel, ParameterCountsMatchTheLayoutForEveryIntraOption) {
  using Intra = IntraHybridConfig;
  ModelConfig config = hand_config();
  for (Intra::Norm norm : {Intra::Norm::group, Intra::Norm::none})
    for (Intra::Scaling scaling :
         {Intra::Scaling::none, Intra::Scaling::vector, Intra::Scaling::scalar, Intra::Scaling::gate})
      for (Intra::Fusion fusion : {Intra::Fusion::subtract, Intra::Fusion::add, Intra::Fusion::concat})
        for (Intra::Output output : {Intra::Output::separate, Intra::Output::joint})
          for (Intra::ValueSharing sharing : {Intra::ValueSharing::none, Intra::ValueSharing::shared}) {
            if (fusion == Intra::Fusion::concat && output == Intra::Output::separate) continue;
            config.intra.norm = norm;
            config.intra.scaling = scaling;
            config.intra.fusion = fusion;
            config.intra.output = output;
            config.intra.value_sharing = sharing;
            // Value sharing needs a Mamba branch as wide as the values (1 kv head of 4): d_ssm 4.
            config.intra.d_ssm = sharing == Intra::ValueSharing::shared ? 4 : 8;
            const bool joint_sum = output == Intra::Output::joint && fusion != Intra::Fusion::concat;
            if (joint_sum && config.intra.d_ssm != config.intra.v_dim) continue;
            SCOPED_TRACE(str("norm ", int(norm), " scaling ", int(scaling), " fusion ", int(fusion), " output ",
                             int(output), " sharing ", int(sharing)));
            expect_counts_match(config);
          }
}

// ---------------------------------------------------------------------------------------------------
// describe().

TEST(CostModel, DescribeTableAndSummaryLine) {
  const ModelConfig config = preset("1b", "intra-1to5");
  const ModelCost cost = model_cost(config, 8192);
  const std::string text = describe(config, cost);
  std::vector<std::string> lines;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  ASSERT_GE(lines.size(), size_t(config.n_layers()) + 2);

  // One table row per layer, 1-based, with its kind.
  for (int64_t i = 0; i < config.n_layers(); ++i) {
    std::istringstream row(lines[size_t(i) + 2]);
    int64_t index = 0;
    char kind = 0;
    row >> index >> kind;
    EXPECT_EQ(index, i + 1);
    EXPECT_EQ(kind, config.pattern[size_t(i)]);
  }
  EXPECT_NE(text.find("total"), std::string::npos);

  const nlohmann::json summary = nlohmann::json::parse(lines.back());
  EXPECT_EQ(summary.at("name"), "1b-intra-1to5");
  EXPECT_EQ(summary.at("params").get<int64_t>(), cost.params);
  EXPECT_EQ(summary.at("non_embedding_params").get<int64_t>(), cost.non_embedding_params);
  EXPECT_EQ(summary.at("flops_per_token").get<double>(), cost.flops_per_token);
  EXPECT_EQ(summary.at("cache_bytes").get<double>(), cost.cache_bytes);
  EXPECT_EQ(summary.at("context").get<int64_t>(), 8192);
  EXPECT_EQ(summary.at("n_layers").get<int64_t>(), 13);
  EXPECT_EQ(summary.at("pattern"), config.pattern);
  std::printf("%s", text.c_str());
}

TEST(CostModel, RejectsBadArguments) {
  try {
    model_cost(hand_config(), 0);
    FAIL() << "expected braid::Error";
  } catch (const Error& error) {
    EXPECT_NE(error.message().find("context must be positive, got 0"), std::string::npos) << error.what();
  }
  ModelConfig broken = hand_config();
  broken.pattern = "TQ";
  EXPECT_THROW(model_cost(broken, 10), Error);
}

}  // namespace
}  // namespace braid
