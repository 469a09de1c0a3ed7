// ModelConfig <-> JSON (MODEL.md sections 2-6), its validation, and the layer-placement helper.
//
// Reading is strict: every key is checked against the keys valid at its nesting level (a typo names
// the closest valid key), every value against its JSON type, and a section is required only when the
// pattern has layers that use it. Every failure is one braid::Error line that starts with the source
// (the file name) and names the key path, e.g. `model.json: attention.n_heads must be an integer`.
#include "layers/model_config.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cctype>
#include <cstdint>
#include <fstream>
#include <optional>
#include <sstream>
#include <utility>
#include <vector>

#include "runtime/error.h"
#include "runtime/suggest.h"

namespace braid {

namespace {

using Json = nlohmann::json;
using OrderedJson = nlohmann::ordered_json;

template <typename... Parts>
void require(bool ok, const Parts&... parts) {
  if (!ok) BRAID_FAIL(parts...);
}

// ---------------------------------------------------------------------------------------------------
// Names: the choices of each enum (shared by parsing and printing) and "did you mean" suggestions.

template <typename Enum>
using Choices = std::vector<std::pair<std::string, Enum>>;

const Choices<IntraHybridConfig::Norm> kNorms = {{"group", IntraHybridConfig::Norm::group},
                                                 {"none", IntraHybridConfig::Norm::none}};
const Choices<IntraHybridConfig::Scaling> kScalings = {{"none", IntraHybridConfig::Scaling::none},
                                                       {"vector", IntraHybridConfig::Scaling::vector},
                                                       {"scalar", IntraHybridConfig::Scaling::scalar},
                                                       {"gate", IntraHybridConfig::Scaling::gate}};
const Choices<IntraHybridConfig::Fusion> kFusions = {{"subtract", IntraHybridConfig::Fusion::subtract},
                                                     {"add", IntraHybridConfig::Fusion::add},
                                                     {"concat", IntraHybridConfig::Fusion::concat}};
const Choices<IntraHybridConfig::Output> kOutputs = {{"separate", IntraHybridConfig::Output::separate},
                                                     {"joint", IntraHybridConfig::Output::joint}};
const Choices<IntraHybridConfig::ValueSharing> kValueSharings = {
    {"none", IntraHybridConfig::ValueSharing::none}, {"shared", IntraHybridConfig::ValueSharing::shared}};
const Choices<FfnConfig::Kind> kFfnKinds = {{"dense", FfnConfig::Kind::dense}, {"moe", FfnConfig::Kind::moe}};
const Choices<Placement> kPlacements = {{"front", Placement::front},     {"middle", Placement::middle},
                                        {"scatter", Placement::middle}, {"end", Placement::end},
                                        {"cluster", Placement::cluster}, {"sandwich", Placement::sandwich}};

template <typename Enum>
const std::string& name_of(const Choices<Enum>& choices, Enum value) {
  for (const auto& [name, choice] : choices)
    if (choice == value) return name;
  BRAID_FAIL("enum value ", int(value), " has no name");
}

template <typename Enum>
std::vector<std::string> names_of(const Choices<Enum>& choices) {
  std::vector<std::string> names;
  for (const auto& choice : choices) names.push_back(choice.first);
  return names;
}

// A short rendering of a JSON value for messages.
std::string brief(const Json& value) {
  std::string text = value.dump();
  return text.size() <= 40 ? text : text.substr(0, 37) + "...";
}

// ---------------------------------------------------------------------------------------------------
// Reading one JSON object: its key path ("attention.rope") and the source named in messages.

class Section {
 public:
  Section(const Json& object, std::string path, const std::string& source)
      : object_(object), path_(std::move(path)), source_(source) {}

  [[noreturn]] void fail(const std::string& message) const { BRAID_FAIL(source_, ": ", message); }
  const std::string& path() const { return path_; }
  std::string name(const std::string& key) const { return path_.empty() ? key : path_ + "." + key; }
  bool has(const std::string& key) const { return object_.contains(key); }

  void allow_only(const std::vector<std::string>& valid) const {
    for (const auto& item : object_.items())
      if (std::find(valid.begin(), valid.end(), item.key()) == valid.end())
        fail("unknown key \"" + name(item.key()) + "\"" +
             suggestion(item.key(), valid, path_.empty() ? "" : path_ + "."));
  }

  // Each reader leaves `out` unchanged when the key is absent, unless it is `required`.
  void read(const std::string& key, int64_t& out, bool required = false) const {
    const Json* value = find(key, required);
    if (!value) return;
    if (value->is_number_integer() &&
        !(value->is_number_unsigned() && value->get<uint64_t>() > uint64_t(INT64_MAX))) {
      out = value->get<int64_t>();
      return;
    }
    fail(name(key) + " must be an integer, got " + brief(*value));
  }
  void read(const std::string& key, double& out, bool required = false) const {
    const Json* value = find(key, required);
    if (!value) return;
    if (!value->is_number()) fail(name(key) + " must be a number, got " + brief(*value));
    out = value->get<double>();
  }
  void read(const std::string& key, bool& out) const {
    const Json* value = find(key, false);
    if (!value) return;
    if (!value->is_boolean()) fail(name(key) + " must be true or false, got " + brief(*value));
    out = value->get<bool>();
  }
  void read(const std::string& key, std::string& out, bool required = false) const {
    const Json* value = find(key, required);
    if (!value) return;
    if (!value->is_string()) fail(name(key) + " must be a string, got " + brief(*value));
    out = value->get<std::string>();
  }
  template <typename Enum>
  void read(const std::string& key, Enum& out, const Choices<Enum>& choices) const {
    std::string text;
    read(key, text);
    if (!has(key)) return;
    for (const auto& [choice_name, choice] : choices)
      if (choice_name == text) {
        out = choice;
        return;
      }
    fail(name(key) + " has unknown value \"" + text + "\"" + suggestion(text, names_of(choices)));
  }

  std::optional<Section> section(const std::string& key) const {
    const Json* value = find(key, false);
    if (!value) return std::nullopt;
    if (!value->is_object()) fail(name(key) + " must be an object, got " + brief(*value));
    return Section(*value, name(key), source_);
  }

 private:
  const Json* find(const std::string& key, bool required) const {
    auto it = object_.find(key);
    if (it != object_.end()) return &*it;
    if (required) fail(name(key) + " is missing");
    return nullptr;
  }

  const Json& object_;
  std::string path_;
  const std::string& source_;
};

// ---------------------------------------------------------------------------------------------------
// Sections. `used` says whether the pattern has layers that need the section's dims: then the dims
// are required keys. An unused section that is present is still checked for keys and types.

void read_rope(const Section& json, RopeSettings& rope) {
  json.allow_only({"theta", "llama3_scaling", "factor", "low_freq_factor", "high_freq_factor", "original_context"});
  json.read("theta", rope.theta);
  json.read("llama3_scaling", rope.llama3_scaling);
  json.read("factor", rope.factor);
  json.read("low_freq_factor", rope.low_freq_factor);
  json.read("high_freq_factor", rope.high_freq_factor);
  json.read("original_context", rope.original_context);
}

void read_attention(const Section& json, bool used, AttentionConfig& attention) {
  json.allow_only({"n_heads", "n_kv_heads", "head_dim", "rope"});
  json.read("n_heads", attention.n_heads, used);
  json.read("n_kv_heads", attention.n_kv_heads, used);
  json.read("head_dim", attention.head_dim, used);
  if (auto rope = json.section("rope")) read_rope(*rope, attention.rope);
}

void read_sliding_window(const Section& json, SlidingWindowConfig& window) {
  json.allow_only({"window", "sink", "rope_theta"});
  json.read("window", window.window);
  json.read("sink", window.sink);
  json.read("rope_theta", window.rope_theta);
}

void read_mamba(const Section& json, bool used, MambaConfig& mamba) {
  json.allow_only({"d_ssm", "head_dim", "d_state", "n_groups", "conv_width", "chunk", "a_init_min", "a_init_max",
                   "dt_init_min", "dt_init_max", "dt_init_floor"});
  json.read("d_ssm", mamba.d_ssm, used);
  json.read("head_dim", mamba.head_dim, used);
  json.read("d_state", mamba.d_state, used);
  json.read("n_groups", mamba.n_groups);
  json.read("conv_width", mamba.conv_width);
  json.read("chunk", mamba.chunk);
  json.read("a_init_min", mamba.a_init_min);
  json.read("a_init_max", mamba.a_init_max);
  json.read("dt_init_min", mamba.dt_init_min);
  json.read("dt_init_max", mamba.dt_init_max);
  json.read("dt_init_floor", mamba.dt_init_floor);
}

void read_intra(const Section& json, bool used, IntraHybridConfig& intra) {
  json.allow_only({"n_heads", "n_kv_heads", "qk_dim", "v_dim", "d_ssm", "mamba_head_dim", "d_state", "norm",
                   "scaling", "fusion", "output", "value_sharing"});
  json.read("n_heads", intra.n_heads, used);
  json.read("n_kv_heads", intra.n_kv_heads, used);
  json.read("qk_dim", intra.qk_dim, used);
  json.read("v_dim", intra.v_dim, used);
  json.read("d_ssm", intra.d_ssm, used);
  json.read("mamba_head_dim", intra.mamba_head_dim, used);
  json.read("d_state", intra.d_state, used);
  json.read("norm", intra.norm, kNorms);
  json.read("scaling", intra.scaling, kScalings);
  json.read("fusion", intra.fusion, kFusions);
  json.read("output", intra.output, kOutputs);
  json.read("value_sharing", intra.value_sharing, kValueSharings);
}

void read_ffn(const Section& json, FfnConfig& ffn) {
  json.allow_only({"kind", "d_ffn", "n_experts", "top_k", "bias_update_rate"});
  json.read("kind", ffn.kind, kFfnKinds);
  json.read("d_ffn", ffn.d_ffn, true);
  json.read("n_experts", ffn.n_experts);
  json.read("top_k", ffn.top_k);
  json.read("bias_update_rate", ffn.bias_update_rate);
}

// The pattern from a layout object (used only when there is no explicit pattern).
std::string pattern_from_layout(const Section& json) {
  json.allow_only({"kind", "ratio", "placement", "n_layers"});
  std::string kind, placement;
  int64_t ratio = 0, n_layers = 0;
  json.read("kind", kind, true);
  json.read("ratio", ratio, true);
  json.read("placement", placement, true);
  json.read("n_layers", n_layers, true);
  if (kind != "T" && kind != "H") json.fail(json.name("kind") + " must be \"T\" or \"H\", got \"" + kind + "\"");
  if (ratio < 1)
    json.fail(json.name("ratio") + " (M layers per " + kind + " layer) must be >= 1, got " + std::to_string(ratio));
  if (n_layers < 2)
    json.fail(json.name("n_layers") + " must be >= 2 for a hybrid, got " + std::to_string(n_layers));
  try {
    return make_pattern(kind[0], ratio, parse_placement(placement), n_layers);
  } catch (const Error& error) {
    json.fail(json.path() + ": " + error.message());
  }
}

// ---------------------------------------------------------------------------------------------------
// Validation helpers.

void check_pattern(const std::string& pattern) {
  require(!pattern.empty(), "pattern is empty (one character a layer: T, W, M or H)");
  for (size_t i = 0; i < pattern.size(); ++i)
    require(std::string("TWMH").find(pattern[i]) != std::string::npos, "pattern has unknown layer kind '",
            pattern[i], "' at position ", i + 1, " (1-based) of \"", pattern, "\"; valid kinds are T, W, M, H");
}

template <typename Number>
void require_positive(const std::string& name, Number value) {
  require(value > 0, name, " must be positive, got ", value);
}

void require_divides(const std::string& divisor_name, int64_t divisor, const std::string& dividend_name,
                     int64_t dividend) {
  require(dividend % divisor == 0, dividend_name, " (", dividend, ") is not divisible by ", divisor_name, " (",
          divisor, ")");
}

void validate_rope(const RopeSettings& rope) {
  require_positive("attention.rope.theta", rope.theta);
  if (!rope.llama3_scaling) return;
  require_positive("attention.rope.factor", rope.factor);
  require_positive("attention.rope.low_freq_factor", rope.low_freq_factor);
  require(rope.high_freq_factor > rope.low_freq_factor, "attention.rope.high_freq_factor (", rope.high_freq_factor,
          ") must exceed attention.rope.low_freq_factor (", rope.low_freq_factor, ")");
  require_positive("attention.rope.original_context", rope.original_context);
}

void validate_attention(const AttentionConfig& attention) {
  require_positive("attention.n_heads", attention.n_heads);
  require_positive("attention.n_kv_heads", attention.n_kv_heads);
  require_positive("attention.head_dim", attention.head_dim);
  require(attention.head_dim % 2 == 0, "attention.head_dim (", attention.head_dim,
          ") must be even: RoPE rotates pairs of dimensions");
  require_divides("attention.n_kv_heads", attention.n_kv_heads, "attention.n_heads", attention.n_heads);
}

void validate_sliding_window(const SlidingWindowConfig& window) {
  require_positive("sliding_window.window", window.window);
  require(window.sink >= 0, "sliding_window.sink must be >= 0, got ", window.sink);
  require_positive("sliding_window.rope_theta", window.rope_theta);
}

// What M and H layers share: groups, conv, chunk and initialization.
void validate_mamba_common(const MambaConfig& mamba) {
  require_positive("mamba.n_groups", mamba.n_groups);
  require_positive("mamba.conv_width", mamba.conv_width);
  require_positive("mamba.chunk", mamba.chunk);
  require_positive("mamba.a_init_min", mamba.a_init_min);
  require(mamba.a_init_min <= mamba.a_init_max, "mamba.a_init_min (", mamba.a_init_min,
          ") exceeds mamba.a_init_max (", mamba.a_init_max, ")");
  require_positive("mamba.dt_init_min", mamba.dt_init_min);
  require(mamba.dt_init_min <= mamba.dt_init_max, "mamba.dt_init_min (", mamba.dt_init_min,
          ") exceeds mamba.dt_init_max (", mamba.dt_init_max, ")");
  require(mamba.dt_init_floor >= 0, "mamba.dt_init_floor must be >= 0, got ", mamba.dt_init_floor);
}

// A Mamba-2 mixer's dims, named as in the config ("mamba.d_ssm" or "intra.d_ssm", ...).
void validate_ssm_dims(const std::string& d_ssm_name, int64_t d_ssm, const std::string& head_dim_name,
                       int64_t head_dim, const std::string& d_state_name, int64_t d_state, int64_t n_groups) {
  require_positive(d_ssm_name, d_ssm);
  require_positive(head_dim_name, head_dim);
  require_positive(d_state_name, d_state);
  require_divides(head_dim_name, head_dim, d_ssm_name, d_ssm);
  const int64_t heads = d_ssm / head_dim;
  require(heads % n_groups == 0, "mamba.n_groups (", n_groups, ") must divide the head count ", d_ssm_name, " / ",
          head_dim_name, " (", heads, ")");
}

void validate_intra(const IntraHybridConfig& intra, int64_t n_groups) {
  using Config = IntraHybridConfig;
  require_positive("intra.n_heads", intra.n_heads);
  require_positive("intra.n_kv_heads", intra.n_kv_heads);
  require_positive("intra.qk_dim", intra.qk_dim);
  require_positive("intra.v_dim", intra.v_dim);
  require_divides("intra.n_heads", intra.n_heads, "intra.qk_dim", intra.qk_dim);
  require_divides("intra.n_heads", intra.n_heads, "intra.v_dim", intra.v_dim);
  require((intra.qk_dim / intra.n_heads) % 2 == 0, "intra Q/K head dim intra.qk_dim / intra.n_heads (",
          intra.qk_dim, " / ", intra.n_heads, " = ", intra.qk_dim / intra.n_heads,
          ") must be even: RoPE rotates pairs of dimensions");
  require_divides("intra.n_kv_heads", intra.n_kv_heads, "intra.n_heads", intra.n_heads);
  validate_ssm_dims("intra.d_ssm", intra.d_ssm, "intra.mamba_head_dim", intra.mamba_head_dim, "intra.d_state",
                    intra.d_state, n_groups);

  if (intra.fusion == Config::Fusion::concat)
    require(intra.output == Config::Output::joint,
            "intra: fusion \"concat\" needs output \"joint\" (concat needs the joint projection of [Nm; Na], widths "
            "intra.d_ssm ",
            intra.d_ssm, " + intra.v_dim ", intra.v_dim, "); separate output projections cannot concatenate");
  if (intra.output == Config::Output::joint && intra.fusion != Config::Fusion::concat)
    require(intra.d_ssm == intra.v_dim, "intra: output \"joint\" with fusion \"", name_of(kFusions, intra.fusion),
            "\" needs equal branch widths, but intra.d_ssm is ", intra.d_ssm, " and intra.v_dim is ", intra.v_dim,
            " (use output \"separate\" or fusion \"concat\")");
  if (intra.value_sharing == Config::ValueSharing::shared) {
    const int64_t value_width = intra.n_kv_heads * (intra.v_dim / intra.n_heads);
    require(value_width == intra.d_ssm,
            "intra: value_sharing \"shared\" feeds the attention values to the Mamba branch as its x input, but "
            "their width intra.n_kv_heads * V head dim (",
            intra.n_kv_heads, " * ", intra.v_dim / intra.n_heads, " = ", value_width, ") differs from intra.d_ssm (",
            intra.d_ssm, ")");
  }
}

void validate_ffn(const FfnConfig& ffn) {
  require_positive("ffn.d_ffn", ffn.d_ffn);
  if (ffn.kind != FfnConfig::Kind::moe) return;
  require_positive("ffn.n_experts", ffn.n_experts);
  require_positive("ffn.top_k", ffn.top_k);
  require(ffn.top_k <= ffn.n_experts, "ffn.top_k (", ffn.top_k, ") exceeds ffn.n_experts (", ffn.n_experts, ")");
  require(ffn.d_ffn % 2 == 0, "ffn.d_ffn (", ffn.d_ffn,
          ") must be even with kind \"moe\": every expert has width d_ffn / 2");
  require(ffn.bias_update_rate >= 0, "ffn.bias_update_rate must be >= 0, got ", ffn.bias_update_rate);
}

bool has_kind(const std::string& pattern, const char* kinds) {
  return pattern.find_first_of(kinds) != std::string::npos;
}

}  // namespace

// ---------------------------------------------------------------------------------------------------

ModelConfig parse_model_config(const std::string& json_text, const std::string& source) {
  Json root;
  try {
    root = Json::parse(json_text);
  } catch (const Json::parse_error& error) {
    // nlohmann's text is "[json.exception.parse_error.101] parse error at line L, column C: ...".
    std::string what = error.what();
    size_t bracket = what.find("] ");
    BRAID_FAIL(source, ": malformed JSON: ", bracket == std::string::npos ? what : what.substr(bracket + 2));
  }
  if (!root.is_object()) BRAID_FAIL(source, ": the top level must be a JSON object, got ", brief(root));

  const Section top(root, "", source);
  top.allow_only({"name", "vocab_size", "d_model", "pattern", "layout", "norm_eps", "init_std", "attention",
                  "sliding_window", "mamba", "intra", "ffn"});
  ModelConfig config;
  top.read("name", config.name);
  top.read("vocab_size", config.vocab_size, true);
  top.read("d_model", config.d_model, true);
  top.read("norm_eps", config.norm_eps);
  top.read("init_std", config.init_std);

  // An explicit pattern always wins over a layout.
  std::optional<Section> layout = top.section("layout");
  if (top.has("pattern")) {
    top.read("pattern", config.pattern);
    if (layout) pattern_from_layout(*layout);  // still checked, so a broken layout is not silently kept
  } else if (layout) {
    config.pattern = pattern_from_layout(*layout);
  } else {
    top.fail("\"pattern\" is missing (give a pattern string such as \"MMMTMM\", or a \"layout\")");
  }
  try {
    check_pattern(config.pattern);
  } catch (const Error& error) {
    top.fail(error.message());
  }

  const bool attention = has_kind(config.pattern, "TW"), mamba = has_kind(config.pattern, "M"),
             intra = has_kind(config.pattern, "H");
  auto required_section = [&](const std::string& key, bool needed, const char* kinds) {
    std::optional<Section> section = top.section(key);
    if (needed && !section)
      top.fail("the pattern \"" + config.pattern + "\" has " + kinds + " layers but the \"" + key +
               "\" section is missing");
    return section;
  };
  if (auto section = required_section("attention", attention, "T/W"))
    read_attention(*section, attention, config.attention);
  if (auto section = top.section("sliding_window")) read_sliding_window(*section, config.sliding_window);
  if (auto section = required_section("mamba", mamba, "M")) read_mamba(*section, mamba, config.mamba);
  if (auto section = required_section("intra", intra, "H")) read_intra(*section, intra, config.intra);
  std::optional<Section> ffn = top.section("ffn");
  if (!ffn) top.fail("the \"ffn\" section is missing (every layer has an FFN: give at least ffn.d_ffn)");
  read_ffn(*ffn, config.ffn);

  try {
    validate(config);
  } catch (const Error& error) {
    top.fail(error.message());
  }
  return config;
}

ModelConfig load_model_config(const std::string& path) {
  std::ifstream file(path);
  if (!file) BRAID_FAIL(path, ": cannot open the model config");
  std::ostringstream text;
  text << file.rdbuf();
  return parse_model_config(text.str(), path);
}

// Sections the pattern does not use are left out (the H attention branch uses only attention.rope),
// so the output reads like a preset; parsing it gives the same configuration.
std::string model_config_to_json(const ModelConfig& config) {
  const std::string& pattern = config.pattern;
  OrderedJson json;
  json["name"] = config.name;
  json["vocab_size"] = config.vocab_size;
  json["d_model"] = config.d_model;
  json["pattern"] = pattern;
  json["norm_eps"] = config.norm_eps;
  json["init_std"] = config.init_std;

  if (has_kind(pattern, "TWH")) {
    const RopeSettings& rope = config.attention.rope;
    OrderedJson attention;
    if (has_kind(pattern, "TW")) {
      attention["n_heads"] = config.attention.n_heads;
      attention["n_kv_heads"] = config.attention.n_kv_heads;
      attention["head_dim"] = config.attention.head_dim;
    }
    attention["rope"] = {{"theta", rope.theta},
                         {"llama3_scaling", rope.llama3_scaling},
                         {"factor", rope.factor},
                         {"low_freq_factor", rope.low_freq_factor},
                         {"high_freq_factor", rope.high_freq_factor},
                         {"original_context", rope.original_context}};
    json["attention"] = attention;
  }
  if (has_kind(pattern, "W")) {
    const SlidingWindowConfig& window = config.sliding_window;
    json["sliding_window"] = {{"window", window.window}, {"sink", window.sink}, {"rope_theta", window.rope_theta}};
  }
  if (has_kind(pattern, "MH")) {
    const MambaConfig& mamba = config.mamba;
    OrderedJson section;
    if (has_kind(pattern, "M")) {
      section["d_ssm"] = mamba.d_ssm;
      section["head_dim"] = mamba.head_dim;
      section["d_state"] = mamba.d_state;
    }
    section["n_groups"] = mamba.n_groups;
    section["conv_width"] = mamba.conv_width;
    section["chunk"] = mamba.chunk;
    section["a_init_min"] = mamba.a_init_min;
    section["a_init_max"] = mamba.a_init_max;
    section["dt_init_min"] = mamba.dt_init_min;
    section["dt_init_max"] = mamba.dt_init_max;
    section["dt_init_floor"] = mamba.dt_init_floor;
    json["mamba"] = section;
  }
  if (has_kind(pattern, "H")) {
    const IntraHybridConfig& intra = config.intra;
    json["intra"] = {{"n_heads", intra.n_heads},
                     {"n_kv_heads", intra.n_kv_heads},
                     {"qk_dim", intra.qk_dim},
                     {"v_dim", intra.v_dim},
                     {"d_ssm", intra.d_ssm},
                     {"mamba_head_dim", intra.mamba_head_dim},
                     {"d_state", intra.d_state},
                     {"norm", name_of(kNorms, intra.norm)},
                     {"scaling", name_of(kScalings, intra.scaling)},
                     {"fusion", name_of(kFusions, intra.fusion)},
                     {"output", name_of(kOutputs, intra.output)},
                     {"value_sharing", name_of(kValueSharings, intra.value_sharing)}};
  }
  const FfnConfig& ffn = config.ffn;
  json["ffn"] = {{"kind", name_of(kFfnKinds, ffn.kind)},
                 {"d_ffn", ffn.d_ffn},
                 {"n_experts", ffn.n_experts},
                 {"top_k", ffn.top_k},
                 {"bias_update_rate", ffn.bias_update_rate}};
  return json.dump(2) + "\n";
}

// Only the sections the pattern uses are checked: an unused section may keep zero dims.
void validate(const ModelConfig& config) {
  check_pattern(config.pattern);
  require_positive("vocab_size", config.vocab_size);
  require_positive("d_model", config.d_model);
  require_positive("norm_eps", config.norm_eps);
  require_positive("init_std", config.init_std);
  const std::string& pattern = config.pattern;
  if (has_kind(pattern, "TW")) validate_attention(config.attention);
  if (has_kind(pattern, "TWH")) validate_rope(config.attention.rope);  // H's attention branch uses it too
  if (has_kind(pattern, "W")) validate_sliding_window(config.sliding_window);
  if (has_kind(pattern, "MH")) validate_mamba_common(config.mamba);
  if (has_kind(pattern, "M"))
    validate_ssm_dims("mamba.d_ssm", config.mamba.d_ssm, "mamba.head_dim", config.mamba.head_dim, "mamba.d_state",
                      config.mamba.d_state, config.mamba.n_groups);
  if (has_kind(pattern, "H")) validate_intra(config.intra, config.mamba.n_groups);
  validate_ffn(config.ffn);
}

// ---------------------------------------------------------------------------------------------------
// Placement (MODEL.md section 6).

Placement parse_placement(const std::string& name) {
  for (const auto& [choice_name, placement] : kPlacements)
    if (choice_name == name) return placement;
  BRAID_FAIL("placement \"", name, "\" is unknown", suggestion(name, names_of(kPlacements)));
}

// The rule. k = max(1, round(n_layers / (ratio + 1))) layers are `kind` (halves round up), the other
// m = n_layers - k are M.
//   middle (alias scatter): the m M layers are split into k + 1 runs (before the first kind layer,
//     between consecutive ones, after the last) whose lengths differ by at most one, the longer runs
//     first. So the leading run is never empty (never attention at layer 1, the paper's rule), the gaps
//     are as equal as they can be, and a spare M layer goes to the front rather than the back.
//     It reproduces the paper's SWA 1:5 (global at 5, 9, 13 of 16), inter 1:1 (T at the even layers of
//     14), inter 1:12 (T at 7 of 13) and 350M 1:5 (4, 8 of 11). The paper's other 13-layer 1B
//     placements follow no single rule (inter 1:5 at {4, 8} but intra 1:5 at {5, 9}; inter 1:3 at
//     {3, 7, 11}); their presets spell the pattern out.
//   front: layers 1..k.   end: the last k layers.
//   cluster: k contiguous layers centred in the stack; with an odd m the extra M layer goes in front
//     (so the cluster never starts at layer 1).
//   sandwich: ceil(k/2) kind layers first and floor(k/2) last (k = 1: layer 1 alone).
// `ratio` >= 1 and `n_layers` >= 2 keep k <= n_layers - 1, so there is always an M layer.
std::string make_pattern(char kind, int64_t ratio, Placement placement, int64_t n_layers) {
  require(kind == 'T' || kind == 'H', "make_pattern: kind must be 'T' or 'H', got '", kind, "'");
  require(ratio >= 1, "make_pattern: ratio (M layers per ", kind, " layer) must be >= 1, got ", ratio);
  require(n_layers >= 2, "make_pattern: n_layers must be >= 2 for a hybrid, got ", n_layers);
  const int64_t k = std::max<int64_t>(1, (2 * n_layers + ratio + 1) / (2 * (ratio + 1)));
  const int64_t m = n_layers - k;
  std::string pattern;
  switch (placement) {
    case Placement::middle: {
      const int64_t base = m / (k + 1), extra = m % (k + 1);
      for (int64_t run = 0; run <= k; ++run) {
        pattern.append(size_t(base + (run < extra ? 1 : 0)), 'M');
        if (run < k) pattern.push_back(kind);
      }
      break;
    }
    case Placement::front:
      pattern = std::string(size_t(k), kind) + std::string(size_t(m), 'M');
      break;
    case Placement::end:
      pattern = std::string(size_t(m), 'M') + std::string(size_t(k), kind);
      break;
    case Placement::cluster:
      pattern = std::string(size_t(m - m / 2), 'M') + std::string(size_t(k), kind) + std::string(size_t(m / 2), 'M');
      break;
    case Placement::sandwich:
      pattern = std::string(size_t(k - k / 2), kind) + std::string(size_t(m), 'M') + std::string(size_t(k / 2), kind);
      break;
  }
  return pattern;
}

}  // namespace braid
