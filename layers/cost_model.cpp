// The cost model of MODEL.md section 7 (the paper's Appendix C), with the parameter layout of the
// model modules (HybridLM: embed, per-layer pre-norms, mixers, FFNs, final norm).
//
// Conventions:
// - Parameters are counted by formula, one term per module weight; the embedding (tied with the LM
//   head) is the only part outside non_embedding_params. MoE counts every expert; the routing bias is
//   a buffer, not a parameter.
// - FLOPs per training token = 6 x the ACTIVE non-embedding parameters (MoE: the shared expert, top_k
//   routed experts and the router, not all E experts) + per-layer terms at context L:
//     T: 12·d_attn·(L+1)/2 with d_attn = n_heads·head_dim (causal attention, forward + backward);
//     W: the same with w = min(L, window + sink) in place of L;
//     H: 6·(qk_dim + v_dim)·(L+1)/2 (Q·Kᵀ over qk_dim, P·V over v_dim) + the scan term of its branch;
//     M: the scan term 3·(9·d_ssm·N + 2·d_ssm).
//   The LM-head matmul is not counted (the paper's 6N convention with N non-embedding).
// - Inference cache in bytes (bf16): T: K and V, 4·head_dim·n_kv·L; W: the same over min(L, window +
//   sink); M: SSM state and conv window, 2·(d_ssm·N + W·(2·G·N + d_ssm)), independent of L; H: its
//   attention K (qk head) and V (v head) over L plus its branch's Mamba state.
#include "layers/cost_model.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <sstream>

#include "runtime/error.h"

namespace braid {

namespace {

// Per-token figures of one Mamba-2 mixer without its gated norm and out projection (shared by M and H).
struct SsmShape {
  int64_t d_ssm, head_dim, d_state, n_groups, conv_width;
  int64_t heads() const { return d_ssm / head_dim; }
  int64_t bc_width() const { return 2 * n_groups * d_state; }
  // in_proj (z | x | B | C | dt, x dropped when the x input comes from elsewhere) + conv + dt_bias, A_log, D.
  int64_t core_params(int64_t d_model, bool x_from_outside) const {
    const int64_t in_width = (x_from_outside ? 1 : 2) * d_ssm + bc_width() + heads();
    const int64_t conv_channels = d_ssm + bc_width();
    return in_width * d_model + conv_channels * conv_width + conv_channels + 3 * heads();
  }
  double scan_flops() const { return 3.0 * (9.0 * double(d_ssm) * double(d_state) + 2.0 * double(d_ssm)); }
  double cache_bytes() const {
    return 2.0 * (double(d_ssm) * double(d_state) + double(conv_width) * double(bc_width() + d_ssm));
  }
};

// Attention over `context` positions: the causal term 12·width·(L+1)/2 with width = the mean of the
// Q·Kᵀ and P·V widths.
double attention_flops(double qk_width, double v_width, int64_t context) {
  return 6.0 * (qk_width + v_width) * double(context + 1) / 2.0;
}

struct MixerCost {
  int64_t params = 0;
  double extra_flops = 0;  // attention and scan terms
  double cache_bytes = 0;
};

MixerCost mixer_cost(const ModelConfig& config, char kind, int64_t context) {
  const int64_t d = config.d_model;
  MixerCost cost;
  switch (kind) {
    case 'T':
    case 'W': {
      const AttentionConfig& attention = config.attention;
      const int64_t q_width = attention.n_heads * attention.head_dim;
      const int64_t kv_width = attention.n_kv_heads * attention.head_dim;
      cost.params = 2 * q_width * d + 2 * kv_width * d;  // q, o and k, v
      const SlidingWindowConfig& window = config.sliding_window;
      const int64_t span = kind == 'W' ? std::min(context, window.window + window.sink) : context;
      cost.extra_flops = attention_flops(double(q_width), double(q_width), span);
      cost.cache_bytes = 4.0 * double(kv_width) * double(span);
      break;
    }
    case 'M': {
      const MambaConfig& mamba = config.mamba;
      const SsmShape ssm{mamba.d_ssm, mamba.head_dim, mamba.d_state, mamba.n_groups, mamba.conv_width};
      cost.params = ssm.core_params(d, false) + mamba.d_ssm /* gated norm */ + d * mamba.d_ssm /* out_proj */;
      cost.extra_flops = ssm.scan_flops();
      cost.cache_bytes = ssm.cache_bytes();
      break;
    }
    case 'H': {
      using Intra = IntraHybridConfig;
      const Intra& intra = config.intra;
      const int64_t qk_head = intra.qk_dim / intra.n_heads, v_head = intra.v_dim / intra.n_heads;
      const int64_t di = intra.d_ssm, v_dim = intra.v_dim;
      const SsmShape ssm{di, intra.mamba_head_dim, intra.d_state, config.mamba.n_groups, config.mamba.conv_width};
      int64_t params = intra.qk_dim * d + intra.n_kv_heads * (qk_head + v_head) * d;  // q, k, v
      params += ssm.core_params(d, intra.value_sharing == Intra::ValueSharing::shared);
      if (intra.norm == Intra::Norm::group) params += 2 * (v_dim + di);  // GroupNorm weight and bias
      switch (intra.scaling) {
        case Intra::Scaling::none: break;
        case Intra::Scaling::vector: params += v_dim + di; break;
        case Intra::Scaling::scalar: params += 1; break;
        case Intra::Scaling::gate: params += (v_dim + di) * d; break;
      }
      if (intra.output == Intra::Output::separate)
        params += d * (di + v_dim);
      else
        params += d * (intra.fusion == Intra::Fusion::concat ? di + v_dim : di);
      cost.params = params;
      cost.extra_flops = attention_flops(double(intra.qk_dim), double(v_dim), context) + ssm.scan_flops();
      cost.cache_bytes = 2.0 * double((qk_head + v_head) * intra.n_kv_heads) * double(context) + ssm.cache_bytes();
      break;
    }
    default:
      BRAID_FAIL("model_cost: unknown layer kind '", kind, "'");
  }
  cost.params += d;  // the mixer's pre-norm
  return cost;
}

// (all parameters, active parameters) of one FFN with its pre-norm.
std::pair<int64_t, int64_t> ffn_params(const ModelConfig& config) {
  const int64_t d = config.d_model;
  const FfnConfig& ffn = config.ffn;
  if (ffn.kind == FfnConfig::Kind::dense) return {3 * d * ffn.d_ffn + d, 3 * d * ffn.d_ffn + d};
  const int64_t expert = 3 * d * (ffn.d_ffn / 2), router = ffn.n_experts * d;
  return {expert * (1 + ffn.n_experts) + router + d, expert * (1 + ffn.top_k) + router + d};
}

std::string with_commas(int64_t value) {
  std::string digits = std::to_string(value < 0 ? -value : value), out;
  for (size_t i = 0; i < digits.size(); ++i) {
    if (i && (digits.size() - i) % 3 == 0) out += ',';
    out += digits[i];
  }
  return (value < 0 ? "-" : "") + out;
}

std::string formatted(const char* format, double value) {
  char buffer[64];
  std::snprintf(buffer, sizeof buffer, format, value);
  return buffer;
}

constexpr double kMiB = 1024.0 * 1024.0;

}  // namespace

ModelCost model_cost(const ModelConfig& config, int64_t context) {
  validate(config);
  BRAID_CHECK(context > 0, "model_cost: context must be positive, got ", context);
  ModelCost cost;
  cost.context = context;
  const auto [ffn_all, ffn_active] = ffn_params(config);
  cost.non_embedding_params = config.d_model;
  for (int64_t i = 0; i < config.n_layers(); ++i) {
    const char kind = config.pattern[size_t(i)];
    const MixerCost mixer = mixer_cost(config, kind, context);
    LayerCost layer;
    layer.index = i;
    layer.kind = kind;
    layer.mixer_params = mixer.params;
    layer.ffn_params = ffn_all;
    layer.flops_per_token = 6.0 * double(mixer.params + ffn_active) + mixer.extra_flops;
    layer.cache_bytes = mixer.cache_bytes;
    cost.layers.push_back(layer);
    cost.non_embedding_params += mixer.params + ffn_all;
    cost.flops_per_token += layer.flops_per_token;
    cost.cache_bytes += layer.cache_bytes;
  }
  cost.flops_per_token += 6.0 * double(config.d_model);  // the final norm's share of 6·active
  cost.embedding_params = config.vocab_size * config.d_model;
  cost.params = cost.embedding_params + cost.non_embedding_params;
  return cost;
}

double tokens_for_flop_budget(const ModelCost& cost, double flop_budget) {
  BRAID_CHECK(cost.flops_per_token > 0, "tokens_for_flop_budget: the cost has no FLOPs per token");
  BRAID_CHECK(flop_budget >= 0, "tokens_for_flop_budget: the FLOP budget must be >= 0, got ", flop_budget);
  return flop_budget / cost.flops_per_token;
}

std::string describe(const ModelConfig& config, const ModelCost& cost) {
  std::ostringstream out;
  out << "model " << (config.name.empty() ? "(unnamed)" : config.name) << ": " << config.n_layers()
      << " layers, pattern " << config.pattern << ", FFN "
      << (config.ffn.kind == FfnConfig::Kind::moe ? "moe" : "dense") << ", context " << cost.context << "\n";
  char line[160];
  std::snprintf(line, sizeof line, "%5s %4s %16s %16s %12s %12s\n", "layer", "kind", "mixer params", "ffn params",
                "GFLOP/token", "cache MiB");
  out << line;
  int64_t mixer_total = 0, ffn_total = 0;
  for (const LayerCost& layer : cost.layers) {
    std::snprintf(line, sizeof line, "%5lld %4c %16s %16s %12.4f %12.3f\n", (long long)(layer.index + 1), layer.kind,
                  with_commas(layer.mixer_params).c_str(), with_commas(layer.ffn_params).c_str(),
                  layer.flops_per_token / 1e9, layer.cache_bytes / kMiB);
    out << line;
    mixer_total += layer.mixer_params;
    ffn_total += layer.ffn_params;
  }
  std::snprintf(line, sizeof line, "%10s %16s %16s %12.4f %12.3f\n", "total", with_commas(mixer_total).c_str(),
                with_commas(ffn_total).c_str(), cost.flops_per_token / 1e9, cost.cache_bytes / kMiB);
  out << line;
  out << "embedding params " << with_commas(cost.embedding_params)
      << " (tied with the LM head), non-embedding params " << with_commas(cost.non_embedding_params)
      << " (layers + final norm), params " << with_commas(cost.params) << "\n";
  if (config.ffn.kind == FfnConfig::Kind::moe) {
    const auto [ffn_all, ffn_active] = ffn_params(config);
    const int64_t active = cost.non_embedding_params - config.n_layers() * (ffn_all - ffn_active);
    out << "active non-embedding params " << with_commas(active)
        << " (shared expert + top_k of " << config.ffn.n_experts << " routed experts + router per layer)\n";
  }
  out << "FLOPs/token " << formatted("%.4g", cost.flops_per_token)
      << " (6 x active non-embedding params + attention and scan terms, MODEL.md section 7), bf16 cache "
      << formatted("%.2f", cost.cache_bytes / kMiB) << " MiB at context " << cost.context << "\n";

  nlohmann::ordered_json summary;
  summary["name"] = config.name;
  summary["params"] = cost.params;
  summary["non_embedding_params"] = cost.non_embedding_params;
  summary["flops_per_token"] = cost.flops_per_token;
  summary["cache_bytes"] = cost.cache_bytes;
  summary["context"] = cost.context;
  summary["n_layers"] = config.n_layers();
  summary["pattern"] = config.pattern;
  out << summary.dump() << "\n";
  return out.str();
}

}  // namespace braid
