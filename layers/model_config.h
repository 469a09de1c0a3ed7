// ModelConfig: every architecture of MODEL.md as data, loaded from JSON and validated.
//
// A model is a pattern string, one character a layer (MODEL.md section 6):
//   T  Transformer block (global causal attention + FFN)
//   W  sliding-window attention block (window + sink, its own RoPE theta) + FFN
//   M  Mamba-2 block + FFN
//   H  intra-layer hybrid block (attention and Mamba-2 branches side by side) + FFN
// The FFN kind (dense SwiGLU or MoE) is a separate option shared by all layers.
#pragma once

#include <cstdint>
#include <string>

namespace braid {

struct RopeSettings {
  double theta = 500000;
  bool llama3_scaling = true;
  double factor = 32, low_freq_factor = 1, high_freq_factor = 4;
  int64_t original_context = 8192;
};

// The attention of T layers (and, with `swa`, of W layers).
struct AttentionConfig {
  int64_t n_heads = 0;
  int64_t n_kv_heads = 0;
  int64_t head_dim = 0;
  RopeSettings rope;
};

// W layers: the attention dims of AttentionConfig with a window, a sink and their own RoPE.
struct SlidingWindowConfig {
  int64_t window = 512;
  int64_t sink = 64;
  double rope_theta = 10000;  // no Llama-3 scaling on SWA layers
};

struct MambaConfig {
  int64_t d_ssm = 0;      // expand * d_model
  int64_t head_dim = 0;   // P
  int64_t d_state = 0;    // N
  int64_t n_groups = 1;   // G (B/C groups and gated-norm groups)
  int64_t conv_width = 4;
  int64_t chunk = 256;    // SSD chunk length Q
  // Initialization (MODEL.md section 3).
  double a_init_min = 0.01, a_init_max = 2.0;
  double dt_init_min = 1e-3, dt_init_max = 0.1, dt_init_floor = 1e-4;
};

// MODEL.md section 4: the five design axes and the branch dims.
struct IntraHybridConfig {
  enum class Norm { group, none };
  enum class Scaling { none, vector, scalar, gate };
  enum class Fusion { subtract, add, concat };
  enum class Output { separate, joint };
  enum class ValueSharing { none, shared };

  // Attention branch: qk_dim total over n_heads (Q/K head dim = qk_dim / n_heads), v_dim total
  // (V head dim = v_dim / n_heads; MODEL.md fixes v_dim = d_model).
  int64_t n_heads = 0;
  int64_t n_kv_heads = 0;
  int64_t qk_dim = 0;
  int64_t v_dim = 0;
  // Mamba branch.
  int64_t d_ssm = 0;
  int64_t mamba_head_dim = 0;
  int64_t d_state = 0;

  Norm norm = Norm::group;
  Scaling scaling = Scaling::none;
  Fusion fusion = Fusion::subtract;
  Output output = Output::separate;
  ValueSharing value_sharing = ValueSharing::none;
};

struct FfnConfig {
  enum class Kind { dense, moe };
  Kind kind = Kind::dense;
  int64_t d_ffn = 0;          // dense width; each MoE expert (shared or routed) uses d_ffn / 2
  int64_t n_experts = 8;      // routed experts
  int64_t top_k = 1;
  double bias_update_rate = 1e-3;
};

struct ModelConfig {
  std::string name;
  int64_t vocab_size = 0;
  int64_t d_model = 0;
  std::string pattern;
  double norm_eps = 1e-5;
  double init_std = 0.02;  // matrices and the embedding; output projections also / sqrt(2 n_layers)
  AttentionConfig attention;
  SlidingWindowConfig sliding_window;
  MambaConfig mamba;
  IntraHybridConfig intra;
  FfnConfig ffn;

  int64_t n_layers() const { return int64_t(pattern.size()); }
};

// Parses and validates; raises braid::Error with one clear message (unknown keys name the closest
// valid key). `source` names the file in messages.
ModelConfig parse_model_config(const std::string& json_text, const std::string& source = "config");
ModelConfig load_model_config(const std::string& path);
std::string model_config_to_json(const ModelConfig& config);  // round-trips through parse
// Raises braid::Error on the first inconsistency (heads not dividing dims, impossible fusion/output
// combinations naming both widths, unknown pattern characters, zero sizes, ...).
void validate(const ModelConfig& config);

// The placement helper (MODEL.md section 6): `kind` layers (T or H) placed among M layers.
enum class Placement { front, middle, end, cluster, sandwich };
Placement parse_placement(const std::string& name);  // "front", "middle" or "scatter", "end", ...
// `ratio` is the number of M layers per `kind` layer (1:5 -> 5). See the .cpp for the exact rule.
std::string make_pattern(char kind, int64_t ratio, Placement placement, int64_t n_layers);

}  // namespace braid
