// ModelConfig: every preset loads and validates (dense and MoE), the paper's placements are in the
// preset files, the placement helper follows its rule, each validation error says what is wrong, and
// configs round-trip through JSON.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <sstream>

#include "layers/model_config.h"
#include "runtime/error.h"
#include "tests/test_util.h"

namespace braid {
namespace {

using testing::error_of;

namespace fs = std::filesystem;
using Json = nlohmann::json;

const std::vector<std::string> kScales = {"tiny", "100m", "350m", "1b", "3b"};
const std::vector<std::string> kFamilies = {"llama",       "mamba",      "swa-1to5",   "inter-1to1",
                                            "inter-1to3",  "inter-1to5", "inter-1to12", "intra-1to5",
                                            "intra-1to1",  "hymba-like", "falconh1-like"};

// configs/models, found from the working directory or one of its parents (tests run from the root).
fs::path models_dir() {
  for (fs::path dir = fs::current_path(); !dir.empty(); dir = dir.parent_path()) {
    if (fs::is_directory(dir / "configs" / "models")) return dir / "configs" / "models";
    if (dir == dir.parent_path()) break;
  }
  ADD_FAILURE() << "configs/models not found above " << fs::current_path();
  return {};
}

fs::path preset_path(const std::string& scale, const std::string& family) {
  return models_dir() / scale / (family + ".json");
}

ModelConfig preset(const std::string& scale, const std::string& family) {
  return load_model_config(preset_path(scale, family).string());
}

std::string file_text(const fs::path& path) {
  std::ifstream file(path);
  std::ostringstream text;
  text << file.rdbuf();
  return text.str();
}

// 1-based positions of `kind` in a pattern.
std::vector<int> indices_of(const std::string& pattern, char kind) {
  std::vector<int> indices;
  for (size_t i = 0; i < pattern.size(); ++i)
    if (pattern[i] == kind) indices.push_back(int(i) + 1);
  return indices;
}

std::string parse_error_of(const Json& json) {
  return error_of([&] { parse_model_config(json.dump(2), "config.json"); });
}

#define EXPECT_HAS(text, part) EXPECT_NE(std::string(text).find(part), std::string::npos) << (text)

// A small valid config with every layer kind, the base of the error tests.
Json all_kinds_json() {
  return Json::parse(R"({
    "name": "all-kinds", "vocab_size": 50, "d_model": 64, "pattern": "TWMH",
    "attention": {"n_heads": 4, "n_kv_heads": 2, "head_dim": 16},
    "sliding_window": {"window": 8, "sink": 2},
    "mamba": {"d_ssm": 128, "head_dim": 16, "d_state": 16, "chunk": 32},
    "intra": {"n_heads": 4, "n_kv_heads": 2, "qk_dim": 32, "v_dim": 64, "d_ssm": 64,
              "mamba_head_dim": 16, "d_state": 16},
    "ffn": {"d_ffn": 192}
  })");
}

// ---------------------------------------------------------------------------------------------------
// Presets.

TEST(ModelPresets, EveryFileLoadsAndValidatesDenseAndMoe) {
  size_t files = 0;
  for (const auto& entry : fs::recursive_directory_iterator(models_dir()))
    if (entry.path().extension() == ".json") ++files;
  EXPECT_EQ(files, kScales.size() * kFamilies.size());

  for (const std::string& scale : kScales)
    for (const std::string& family : kFamilies) {
      SCOPED_TRACE(scale + "/" + family);
      ModelConfig config = preset(scale, family);
      EXPECT_EQ(config.name, scale + "-" + family);
      EXPECT_EQ(config.vocab_size, scale == "tiny" ? 50257 : 128256);
      EXPECT_EQ(config.ffn.kind, FfnConfig::Kind::dense);
      config.ffn.kind = FfnConfig::Kind::moe;
      EXPECT_NO_THROW(validate(config));

      // The same switch written in the JSON.
      Json json = Json::parse(file_text(preset_path(scale, family)));
      json["ffn"]["kind"] = "moe";
      ModelConfig moe = parse_model_config(json.dump(), "moe.json");
      EXPECT_EQ(moe.ffn.kind, FfnConfig::Kind::moe);
      EXPECT_EQ(moe.ffn.n_experts, 8);
      EXPECT_EQ(moe.ffn.top_k, 1);
    }
}

TEST(ModelPresets, PaperPlacements) {
  using Indices = std::vector<int>;
  auto expect_placement = [](const std::string& scale, const std::string& family, char kind, size_t n_layers,
                             const Indices& indices, char other) {
    SCOPED_TRACE(scale + "/" + family);
    const std::string pattern = preset(scale, family).pattern;
    EXPECT_EQ(pattern.size(), n_layers) << pattern;
    EXPECT_EQ(indices_of(pattern, kind), indices) << pattern;
    EXPECT_EQ(indices_of(pattern, other).size() + indices.size(), n_layers) << pattern;
  };
  expect_placement("1b", "inter-1to5", 'T', 13, {4, 8}, 'M');
  expect_placement("1b", "intra-1to5", 'H', 13, {5, 9}, 'M');
  expect_placement("1b", "hymba-like", 'H', 13, {5, 9}, 'M');
  expect_placement("1b", "falconh1-like", 'H', 13, {5, 9}, 'M');
  expect_placement("1b", "inter-1to3", 'T', 13, {3, 7, 11}, 'M');
  expect_placement("1b", "inter-1to12", 'T', 13, {7}, 'M');
  expect_placement("1b", "inter-1to1", 'T', 14, {2, 4, 6, 8, 10, 12, 14}, 'M');
  expect_placement("1b", "swa-1to5", 'T', 16, {5, 9, 13}, 'W');
  expect_placement("1b", "intra-1to1", 'H', 13, {2, 4, 6, 8, 10, 12}, 'M');  // our choice, see README
  expect_placement("350m", "inter-1to5", 'T', 11, {4, 8}, 'M');
  expect_placement("350m", "intra-1to5", 'H', 11, {4, 8}, 'M');
  expect_placement("100m", "inter-1to5", 'T', 6, {4}, 'M');
  expect_placement("100m", "intra-1to5", 'H', 6, {4}, 'M');
  expect_placement("tiny", "inter-1to5", 'T', 6, {4}, 'M');
  expect_placement("tiny", "intra-1to5", 'H', 6, {4}, 'M');

  // Homogeneous depths of MODEL.md section 6.
  const std::map<std::string, std::pair<size_t, size_t>> depths = {
      {"100m", {8, 6}}, {"350m", {14, 11}}, {"1b", {16, 13}}, {"3b", {28, 21}}};
  for (const auto& [scale, depth] : depths) {
    EXPECT_EQ(preset(scale, "llama").pattern, std::string(depth.first, 'T')) << scale;
    EXPECT_EQ(preset(scale, "mamba").pattern, std::string(depth.second, 'M')) << scale;
  }
  // 3B: 4 T + 18 M and 18 M + 4 H, scattered by the helper's rule.
  EXPECT_EQ(preset("3b", "inter-1to5").pattern, make_pattern('T', 5, Placement::middle, 22));
  EXPECT_EQ(preset("3b", "intra-1to5").pattern, make_pattern('H', 5, Placement::middle, 22));
  EXPECT_EQ(indices_of(preset("3b", "inter-1to5").pattern, 'T').size(), 4u);
}

// Presets whose placement the paper does not print come from the helper's middle rule.
TEST(ModelPresets, UnprintedPlacementsFollowTheHelper) {
  for (const std::string scale : {"tiny", "100m", "350m", "3b"}) {
    SCOPED_TRACE(scale);
    const int64_t hybrid_layers = int64_t(preset(scale, "intra-1to5").pattern.size());
    EXPECT_EQ(preset(scale, "inter-1to3").pattern, make_pattern('T', 3, Placement::middle, hybrid_layers));
    EXPECT_EQ(preset(scale, "inter-1to12").pattern, make_pattern('T', 12, Placement::middle, hybrid_layers));
    std::string swa = make_pattern('T', 5, Placement::middle, int64_t(preset(scale, "llama").pattern.size()));
    std::replace(swa.begin(), swa.end(), 'M', 'W');
    EXPECT_EQ(preset(scale, "swa-1to5").pattern, swa);
  }
}

TEST(ModelPresets, IntraDimsAndHybridRecipes) {
  const ModelConfig intra = preset("1b", "intra-1to5");
  EXPECT_EQ(intra.intra.n_heads, 16);
  EXPECT_EQ(intra.intra.n_kv_heads, 4);
  EXPECT_EQ(intra.intra.qk_dim, 1152);
  EXPECT_EQ(intra.intra.v_dim, 2048);
  EXPECT_EQ(intra.intra.d_ssm, 2304);
  EXPECT_EQ(intra.intra.mamba_head_dim, 144);
  EXPECT_EQ(intra.intra.d_state, 128);
  EXPECT_EQ(intra.intra.fusion, IntraHybridConfig::Fusion::subtract);
  EXPECT_EQ(intra.intra.output, IntraHybridConfig::Output::separate);
  EXPECT_EQ(intra.intra.norm, IntraHybridConfig::Norm::group);
  for (const std::string& scale : kScales) {
    SCOPED_TRACE(scale);
    const ModelConfig base = preset(scale, "intra-1to5");
    EXPECT_EQ(base.intra.qk_dim * 2, base.intra.d_ssm);  // the 1:1 dimension ratio
    EXPECT_EQ(base.intra.v_dim, base.d_model);
    const ModelConfig hymba = preset(scale, "hymba-like");
    EXPECT_EQ(hymba.intra.norm, IntraHybridConfig::Norm::group);
    EXPECT_EQ(hymba.intra.scaling, IntraHybridConfig::Scaling::vector);
    EXPECT_EQ(hymba.intra.fusion, IntraHybridConfig::Fusion::add);
    EXPECT_EQ(hymba.intra.output, IntraHybridConfig::Output::joint);
    EXPECT_EQ(hymba.intra.d_ssm, hymba.intra.v_dim);
    const ModelConfig falcon = preset(scale, "falconh1-like");
    EXPECT_EQ(falcon.intra.norm, IntraHybridConfig::Norm::none);
    EXPECT_EQ(falcon.intra.scaling, IntraHybridConfig::Scaling::none);
    EXPECT_EQ(falcon.intra.fusion, IntraHybridConfig::Fusion::concat);
    EXPECT_EQ(falcon.intra.output, IntraHybridConfig::Output::joint);
    const ModelConfig intra_1to1 = preset(scale, "intra-1to1");
    EXPECT_EQ(intra_1to1.intra.qk_dim, base.intra.qk_dim);
    EXPECT_EQ(intra_1to1.intra.d_ssm, base.intra.d_ssm);
  }
  const ModelConfig mamba = preset("3b", "mamba");
  EXPECT_EQ(mamba.mamba.d_ssm, 6144);
  EXPECT_EQ(mamba.mamba.head_dim, 192);
  EXPECT_EQ(mamba.mamba.d_state, 256);
  EXPECT_EQ(mamba.mamba.chunk, 256);
}

// The preset files say exactly what model_config_to_json writes (same keys, same values).
TEST(ModelPresets, FilesEqualTheirSerialization) {
  for (const std::string& scale : kScales)
    for (const std::string& family : kFamilies) {
      SCOPED_TRACE(scale + "/" + family);
      EXPECT_EQ(Json::parse(model_config_to_json(preset(scale, family))),
                Json::parse(file_text(preset_path(scale, family))));
    }
}

// ---------------------------------------------------------------------------------------------------
// The placement helper.

int64_t rounded_kind_layers(int64_t ratio, int64_t n_layers) {
  return std::max<int64_t>(1, std::lround(double(n_layers) / double(ratio + 1)));
}

// Lengths of the M runs around the kind layers: before the first, between, after the last.
std::vector<int64_t> runs_of(const std::string& pattern, char kind) {
  std::vector<int64_t> runs{0};
  for (char layer : pattern) {
    if (layer == kind)
      runs.push_back(0);
    else
      ++runs.back();
  }
  return runs;
}

TEST(Placement, MiddleIsEvenlySpacedAndNeverAtLayerOne) {
  for (int64_t n_layers = 2; n_layers <= 40; ++n_layers)
    for (int64_t ratio = 1; ratio <= 15; ++ratio) {
      SCOPED_TRACE("n_layers " + std::to_string(n_layers) + ", ratio " + std::to_string(ratio));
      const std::string pattern = make_pattern('T', ratio, Placement::middle, n_layers);
      ASSERT_EQ(int64_t(pattern.size()), n_layers);
      EXPECT_EQ(int64_t(indices_of(pattern, 'T').size()), rounded_kind_layers(ratio, n_layers)) << pattern;
      EXPECT_EQ(pattern[0], 'M') << pattern;
      const std::vector<int64_t> runs = runs_of(pattern, 'T');
      EXPECT_LE(*std::max_element(runs.begin(), runs.end()) - *std::min_element(runs.begin(), runs.end()), 1)
          << pattern;
      EXPECT_TRUE(std::is_sorted(runs.rbegin(), runs.rend())) << "longer runs first: " << pattern;
    }
}

TEST(Placement, MiddleReproducesPaperPlacements) {
  EXPECT_EQ(make_pattern('T', 5, Placement::middle, 16), "MMMMTMMMTMMMTMMM");  // SWA 1:5 globals
  EXPECT_EQ(make_pattern('T', 1, Placement::middle, 14), "MTMTMTMTMTMTMT");    // 1B inter 1:1
  EXPECT_EQ(make_pattern('T', 12, Placement::middle, 13), "MMMMMMTMMMMMM");    // 1B inter 1:12
  EXPECT_EQ(make_pattern('H', 5, Placement::middle, 11), "MMMHMMMHMMM");       // 350M 1:5
  EXPECT_EQ(make_pattern('H', 5, Placement::middle, 6), "MMMHMM");             // 100M 1:5
  EXPECT_EQ(make_pattern('H', 5, Placement::middle, 22), "MMMMHMMMMHMMMMHMMMHMMM");  // 3B
  EXPECT_EQ(parse_placement("scatter"), Placement::middle);
  EXPECT_EQ(parse_placement("middle"), Placement::middle);
}

TEST(Placement, FrontEndClusterSandwich) {
  for (int64_t n_layers = 2; n_layers <= 30; ++n_layers)
    for (int64_t ratio : {1, 2, 3, 5, 12}) {
      SCOPED_TRACE("n_layers " + std::to_string(n_layers) + ", ratio " + std::to_string(ratio));
      const int64_t k = rounded_kind_layers(ratio, n_layers), m = n_layers - k;
      EXPECT_EQ(make_pattern('H', ratio, Placement::front, n_layers), std::string(k, 'H') + std::string(m, 'M'));
      EXPECT_EQ(make_pattern('H', ratio, Placement::end, n_layers), std::string(m, 'M') + std::string(k, 'H'));

      const std::string cluster = make_pattern('H', ratio, Placement::cluster, n_layers);
      const std::vector<int> at = indices_of(cluster, 'H');
      ASSERT_EQ(int64_t(at.size()), k) << cluster;
      EXPECT_EQ(at.back() - at.front() + 1, k) << "contiguous: " << cluster;
      const int64_t before = at.front() - 1, after = n_layers - at.back();
      EXPECT_TRUE(before == after || before == after + 1) << "centred: " << cluster;
      EXPECT_EQ(cluster[0], 'M') << cluster;

      const std::string sandwich = make_pattern('H', ratio, Placement::sandwich, n_layers);
      EXPECT_EQ(sandwich, std::string(k - k / 2, 'H') + std::string(m, 'M') + std::string(k / 2, 'H'));
      EXPECT_EQ(sandwich.front(), 'H');
      if (k >= 2) {
        EXPECT_EQ(sandwich.back(), 'H') << "both ends: " << sandwich;
      }
    }
  EXPECT_EQ(make_pattern('T', 5, Placement::cluster, 13), "MMMMMMTTMMMMM");
  EXPECT_EQ(make_pattern('T', 3, Placement::sandwich, 13), "TTMMMMMMMMMMT");
}

TEST(Placement, EdgeCases) {
  EXPECT_EQ(make_pattern('T', 1, Placement::middle, 2), "MT");
  EXPECT_EQ(make_pattern('T', 1, Placement::middle, 3), "MTT");   // round(1.5) = 2 kind layers
  EXPECT_EQ(make_pattern('T', 100, Placement::middle, 5), "MMTMM");  // at least one kind layer
  EXPECT_EQ(make_pattern('H', 100, Placement::sandwich, 5), "HMMMM");
  EXPECT_HAS(error_of([] { make_pattern('T', 0, Placement::middle, 10); }), "ratio");
  EXPECT_HAS(error_of([] { make_pattern('T', 0, Placement::middle, 10); }), "got 0");
  EXPECT_HAS(error_of([] { make_pattern('T', 5, Placement::middle, 1); }), "n_layers must be >= 2");
  EXPECT_HAS(error_of([] { make_pattern('M', 5, Placement::middle, 10); }), "kind must be 'T' or 'H', got 'M'");
  EXPECT_HAS(error_of([] { parse_placement("midle"); }), "did you mean \"middle\"?");
}

TEST(Placement, LayoutInJson) {
  Json json = all_kinds_json();
  json.erase("pattern");
  json["layout"] = {{"kind", "H"}, {"ratio", 5}, {"placement", "scatter"}, {"n_layers", 13}};
  EXPECT_EQ(parse_model_config(json.dump()).pattern, make_pattern('H', 5, Placement::middle, 13));
  json["pattern"] = "MMMMHMMMHMMMM";  // an explicit pattern wins
  EXPECT_EQ(parse_model_config(json.dump()).pattern, "MMMMHMMMHMMMM");
  json.erase("pattern");
  json["layout"]["placement"] = "sandwhich";
  EXPECT_HAS(parse_error_of(json),
             "config.json: layout: placement \"sandwhich\" is unknown (did you mean \"sandwich\"?)");
  json["layout"] = {{"kind", "M"}, {"ratio", 5}, {"placement", "front"}, {"n_layers", 13}};
  EXPECT_HAS(parse_error_of(json), "layout.kind must be \"T\" or \"H\", got \"M\"");
  json["layout"] = {{"kind", "T"}, {"ratio", 0}, {"placement", "front"}, {"n_layers", 13}};
  EXPECT_HAS(parse_error_of(json), "config.json: layout.ratio (M layers per T layer) must be >= 1, got 0");
  json["layout"] = {{"kind", "T"}, {"ratio", 3}, {"placement", "front"}, {"n_layers", 1}};
  EXPECT_HAS(parse_error_of(json), "config.json: layout.n_layers must be >= 2 for a hybrid, got 1");
  json.erase("layout");
  EXPECT_HAS(parse_error_of(json), "config.json: \"pattern\" is missing");
}

// ---------------------------------------------------------------------------------------------------
// Validation errors.

TEST(ModelConfigErrors, UnknownKeysSuggestTheClosest) {
  Json json = all_kinds_json();
  json["atention"] = json["attention"];
  EXPECT_HAS(parse_error_of(json), "config.json: unknown key \"atention\" (did you mean \"attention\"?)");

  json = all_kinds_json();
  json["attention"]["n_head"] = 4;
  EXPECT_HAS(parse_error_of(json),
             "config.json: unknown key \"attention.n_head\" (did you mean \"attention.n_heads\"?)");

  json = all_kinds_json();
  json["attention"]["rope"] = {{"thetta", 10000}};
  EXPECT_HAS(parse_error_of(json), "unknown key \"attention.rope.thetta\" (did you mean \"attention.rope.theta\"?)");

  json = all_kinds_json();
  json["intra"]["fuson"] = "add";
  EXPECT_HAS(parse_error_of(json), "unknown key \"intra.fuson\" (did you mean \"intra.fusion\"?)");

  json = all_kinds_json();
  json["zzzzzzzzzzzz"] = 1;  // nothing close: the valid keys are listed
  EXPECT_HAS(parse_error_of(json), "unknown key \"zzzzzzzzzzzz\" (expected one of name, vocab_size, d_model");
}

TEST(ModelConfigErrors, WrongTypesAndMalformedJson) {
  Json json = all_kinds_json();
  json["d_model"] = "64";
  EXPECT_HAS(parse_error_of(json), "config.json: d_model must be an integer, got \"64\"");
  json = all_kinds_json();
  json["mamba"]["d_state"] = 16.5;
  EXPECT_HAS(parse_error_of(json), "config.json: mamba.d_state must be an integer, got 16.5");
  json = all_kinds_json();
  json["attention"]["rope"] = {{"llama3_scaling", 1}};
  EXPECT_HAS(parse_error_of(json), "attention.rope.llama3_scaling must be true or false, got 1");
  json = all_kinds_json();
  json["norm_eps"] = "small";
  EXPECT_HAS(parse_error_of(json), "norm_eps must be a number, got \"small\"");
  json = all_kinds_json();
  json["mamba"] = 3;
  EXPECT_HAS(parse_error_of(json), "config.json: mamba must be an object, got 3");
  json = all_kinds_json();
  json["intra"]["fusion"] = "subtact";
  EXPECT_HAS(parse_error_of(json), "intra.fusion has unknown value \"subtact\" (did you mean \"subtract\"?)");
  json = all_kinds_json();
  json["ffn"]["kind"] = 1;
  EXPECT_HAS(parse_error_of(json), "ffn.kind must be a string, got 1");

  const std::string malformed =
      error_of([] { parse_model_config("{\n  \"d_model\": 64,\n  \"pattern\" \"M\"\n}", "config.json"); });
  EXPECT_HAS(malformed, "config.json: malformed JSON: parse error at line 3, column");
  EXPECT_HAS(error_of([] { parse_model_config("[1, 2]", "config.json"); }),
             "config.json: the top level must be a JSON object, got [1,2]");
  EXPECT_HAS(error_of([] { load_model_config("/nonexistent/model.json"); }),
             "/nonexistent/model.json: cannot open the model config");
}

TEST(ModelConfigErrors, MissingSectionsAndKeys) {
  Json json = all_kinds_json();
  json.erase("mamba");
  EXPECT_HAS(parse_error_of(json),
             "config.json: the pattern \"TWMH\" has M layers but the \"mamba\" section is missing");
  json = all_kinds_json();
  json.erase("attention");
  EXPECT_HAS(parse_error_of(json), "has T/W layers but the \"attention\" section is missing");
  json = all_kinds_json();
  json.erase("intra");
  EXPECT_HAS(parse_error_of(json), "has H layers but the \"intra\" section is missing");
  json = all_kinds_json();
  json.erase("ffn");
  EXPECT_HAS(parse_error_of(json), "the \"ffn\" section is missing");
  json = all_kinds_json();
  json["attention"].erase("head_dim");
  EXPECT_HAS(parse_error_of(json), "config.json: attention.head_dim is missing");
  json = all_kinds_json();
  json.erase("d_model");
  EXPECT_HAS(parse_error_of(json), "config.json: d_model is missing");

  // Sections the pattern does not use are optional, and their dims are not required.
  json = all_kinds_json();
  json["pattern"] = "MMHM";
  json.erase("attention");
  json.erase("sliding_window");
  json["intra"] = all_kinds_json()["intra"];
  EXPECT_NO_THROW(parse_model_config(json.dump()));
  json["pattern"] = "MMMM";
  json["intra"] = {{"norm", "none"}};
  EXPECT_NO_THROW(parse_model_config(json.dump()));
}

TEST(ModelConfigErrors, Pattern) {
  Json json = all_kinds_json();
  json["pattern"] = "";
  EXPECT_HAS(parse_error_of(json), "config.json: pattern is empty");
  json["pattern"] = "MMTMXM";
  EXPECT_HAS(parse_error_of(json),
             "config.json: pattern has unknown layer kind 'X' at position 5 (1-based) of \"MMTMXM\"");
  json["pattern"] = "mmtm";
  EXPECT_HAS(parse_error_of(json), "unknown layer kind 'm' at position 1");
}

TEST(ModelConfigErrors, SizesAndDivisibility) {
  struct Case {
    std::function<void(Json&)> change;
    std::string expected;
  };
  const std::vector<Case> cases = {
      {[](Json& j) { j["d_model"] = 0; }, "config.json: d_model must be positive, got 0"},
      {[](Json& j) { j["vocab_size"] = -3; }, "vocab_size must be positive, got -3"},
      {[](Json& j) { j["mamba"]["d_state"] = -4; }, "mamba.d_state must be positive, got -4"},
      {[](Json& j) { j["ffn"]["d_ffn"] = 0; }, "ffn.d_ffn must be positive, got 0"},
      {[](Json& j) { j["intra"]["v_dim"] = 0; }, "intra.v_dim must be positive, got 0"},
      {[](Json& j) { j["sliding_window"]["window"] = 0; }, "sliding_window.window must be positive, got 0"},
      {[](Json& j) { j["attention"]["n_kv_heads"] = 3; },
       "attention.n_heads (4) is not divisible by attention.n_kv_heads (3)"},
      {[](Json& j) { j["attention"]["head_dim"] = 15; }, "attention.head_dim (15) must be even"},
      {[](Json& j) { j["mamba"]["d_ssm"] = 120; }, "mamba.d_ssm (120) is not divisible by mamba.head_dim (16)"},
      {[](Json& j) { j["mamba"]["n_groups"] = 3; }, "mamba.n_groups (3) must divide the head count"},
      {[](Json& j) { j["intra"]["qk_dim"] = 30; }, "intra.qk_dim (30) is not divisible by intra.n_heads (4)"},
      {[](Json& j) { j["intra"]["v_dim"] = 66; }, "intra.v_dim (66) is not divisible by intra.n_heads (4)"},
      {[](Json& j) { j["intra"]["qk_dim"] = 36; }, "intra.qk_dim / intra.n_heads (36 / 4 = 9) must be even"},
      {[](Json& j) { j["intra"]["n_kv_heads"] = 3; }, "intra.n_heads (4) is not divisible by intra.n_kv_heads (3)"},
      {[](Json& j) { j["intra"]["d_ssm"] = 72; }, "intra.d_ssm (72) is not divisible by intra.mamba_head_dim (16)"},
      {[](Json& j) { j["mamba"]["a_init_min"] = 3.0; }, "mamba.a_init_min (3) exceeds mamba.a_init_max (2)"},
      {[](Json& j) { j["norm_eps"] = 0; }, "norm_eps must be positive, got 0"},
      {[](Json& j) { j["ffn"]["kind"] = "moe"; j["ffn"]["top_k"] = 9; }, "ffn.top_k (9) exceeds ffn.n_experts (8)"},
      {[](Json& j) { j["ffn"]["kind"] = "moe"; j["ffn"]["d_ffn"] = 193; },
       "ffn.d_ffn (193) must be even with kind \"moe\""},
  };
  for (const Case& test : cases) {
    Json json = all_kinds_json();
    test.change(json);
    EXPECT_HAS(parse_error_of(json), test.expected);
  }
  // The same checks without a file name when validate() is called directly.
  ModelConfig config = parse_model_config(all_kinds_json().dump());
  config.attention.head_dim = 0;
  EXPECT_EQ(error_of([&] { validate(config); }), "attention.head_dim must be positive, got 0");
  // A dense FFN does not care about the MoE fields.
  Json dense = all_kinds_json();
  dense["ffn"]["top_k"] = 9;
  dense["ffn"]["d_ffn"] = 193;
  EXPECT_NO_THROW(parse_model_config(dense.dump()));
}

TEST(ModelConfigErrors, FusionOutputAndValueSharing) {
  Json json = all_kinds_json();
  json["intra"]["d_ssm"] = 128;
  json["intra"]["output"] = "joint";
  json["intra"]["fusion"] = "add";
  std::string message = parse_error_of(json);
  EXPECT_HAS(message, "config.json: intra: output \"joint\" with fusion \"add\" needs equal branch widths");
  EXPECT_HAS(message, "intra.d_ssm is 128 and intra.v_dim is 64");
  json["intra"]["fusion"] = "subtract";
  EXPECT_HAS(parse_error_of(json), "intra.d_ssm is 128 and intra.v_dim is 64");
  json["intra"]["fusion"] = "concat";  // concat + joint takes any widths
  EXPECT_NO_THROW(parse_model_config(json.dump()));
  json["intra"]["output"] = "separate";
  message = parse_error_of(json);
  EXPECT_HAS(message, "concat needs the joint projection");
  EXPECT_HAS(message, "intra.d_ssm 128 + intra.v_dim 64");

  json = all_kinds_json();  // 2 kv heads of V head dim 16: a 32-wide value, Mamba branch 64 wide
  json["intra"]["value_sharing"] = "shared";
  message = parse_error_of(json);
  EXPECT_HAS(message, "value_sharing \"shared\"");
  EXPECT_HAS(message, "(2 * 16 = 32) differs from intra.d_ssm (64)");
  json["intra"]["d_ssm"] = 32;
  EXPECT_NO_THROW(parse_model_config(json.dump()));
}

// ---------------------------------------------------------------------------------------------------
// Serialization.

TEST(ModelConfigJson, RoundTripsEveryField) {
  ModelConfig config = parse_model_config(all_kinds_json().dump());
  config.name = "round-trip";
  config.norm_eps = 1.2345678901234567e-6;
  config.init_std = 0.0173;
  config.attention.rope = {250000.5, false, 8, 0.5, 3, 4096};
  config.sliding_window = {100, 7, 12345.25};
  config.mamba.n_groups = 2;
  config.mamba.conv_width = 3;
  config.mamba.chunk = 64;
  config.mamba.a_init_min = 0.5;
  config.mamba.a_init_max = 1.5;
  config.mamba.dt_init_min = 2e-3;
  config.mamba.dt_init_max = 0.05;
  config.mamba.dt_init_floor = 3e-4;
  config.intra.d_ssm = 32;
  config.intra.norm = IntraHybridConfig::Norm::none;
  config.intra.scaling = IntraHybridConfig::Scaling::gate;
  config.intra.fusion = IntraHybridConfig::Fusion::concat;
  config.intra.output = IntraHybridConfig::Output::joint;
  config.intra.value_sharing = IntraHybridConfig::ValueSharing::shared;
  config.ffn = {FfnConfig::Kind::moe, 96, 4, 2, 5e-4};
  validate(config);

  const std::string json = model_config_to_json(config);
  const ModelConfig back = parse_model_config(json, "round-trip.json");
  EXPECT_EQ(model_config_to_json(back), json);
  EXPECT_EQ(back.norm_eps, config.norm_eps);  // doubles exactly
  EXPECT_EQ(back.attention.rope.theta, 250000.5);
  EXPECT_FALSE(back.attention.rope.llama3_scaling);
  EXPECT_EQ(back.attention.rope.original_context, 4096);
  EXPECT_EQ(back.sliding_window.rope_theta, 12345.25);
  EXPECT_EQ(back.mamba.dt_init_floor, 3e-4);
  EXPECT_EQ(back.intra.scaling, IntraHybridConfig::Scaling::gate);
  EXPECT_EQ(back.intra.value_sharing, IntraHybridConfig::ValueSharing::shared);
  EXPECT_EQ(back.ffn.kind, FfnConfig::Kind::moe);
  EXPECT_EQ(back.ffn.top_k, 2);
  EXPECT_EQ(back.ffn.bias_update_rate, 5e-4);
  EXPECT_EQ(nlohmann::ordered_json::parse(json).dump(2) + "\n", json) << "indent 2, fixed key order";
}

}  // namespace
}  // namespace braid
