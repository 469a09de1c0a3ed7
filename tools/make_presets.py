#!/usr/bin/env python3
"""Writes the model presets configs/models/<scale>/<family>.json (MODEL.md section 6).

Run from the repository root: `python3 tools/make_presets.py`. The output is deterministic (sorted
scales and families, keys in a fixed order, indent 2), so re-running it changes nothing unless this
file changed. configs/models/README.md explains the families, depths and placements.

Every preset spells its pattern out. Where the paper prints the indices (1-based) they are used as
printed; elsewhere the pattern comes from `middle_pattern`, the same rule as make_pattern(kind, ratio,
Placement::middle, n_layers) in layers/model_config.cpp (tests/cpu/test_model_config.cpp checks that
the two agree on every preset built by the rule).
"""

import json
import os

# Per scale: model width, FFN width, attention (T/W), Mamba-2 (M), the intra-hybrid branches (H), and
# the depths: n_t for Transformer-depth families (llama, swa), n_m for Mamba, n_h for the hybrids.
SCALES = {
    "tiny": dict(vocab=50257, d=64, ffn=192, heads=4, kv=2, head_dim=16,
                 d_ssm=128, p=16, n=16, chunk=32,
                 intra_heads=4, intra_kv=2, qk=32, v=64, intra_d_ssm=64, intra_p=16, intra_n=16,
                 window=32, sink=4, n_t=8, n_m=6, n_h=6, n_1to1=6),
    "100m": dict(vocab=128256, d=1024, ffn=3072, heads=16, kv=4, head_dim=64,
                 d_ssm=2048, p=128, n=128, chunk=256,
                 intra_heads=8, intra_kv=2, qk=512, v=1024, intra_d_ssm=1024, intra_p=128, intra_n=128,
                 window=512, sink=64, n_t=8, n_m=6, n_h=6, n_1to1=6),
    "350m": dict(vocab=128256, d=1536, ffn=4096, heads=24, kv=8, head_dim=64,
                 d_ssm=3072, p=128, n=128, chunk=256,
                 intra_heads=16, intra_kv=4, qk=768, v=1536, intra_d_ssm=1536, intra_p=96, intra_n=128,
                 window=512, sink=64, n_t=14, n_m=11, n_h=11, n_1to1=12),
    "1b": dict(vocab=128256, d=2048, ffn=8192, heads=32, kv=8, head_dim=64,
               d_ssm=4096, p=128, n=128, chunk=256,
               intra_heads=16, intra_kv=4, qk=1152, v=2048, intra_d_ssm=2304, intra_p=144, intra_n=128,
               window=512, sink=64, n_t=16, n_m=13, n_h=13, n_1to1=14),
    "3b": dict(vocab=128256, d=3072, ffn=8192, heads=32, kv=8, head_dim=96,
               d_ssm=6144, p=192, n=256, chunk=256,
               intra_heads=16, intra_kv=4, qk=1536, v=3072, intra_d_ssm=3072, intra_p=192, intra_n=256,
               window=512, sink=64, n_t=28, n_m=21, n_h=22, n_1to1=24),
}

# The paper's printed placements (1-based indices of the T or H layers; "even" = every even layer).
# tiny copies the 100M shapes.
PAPER = {
    ("100m", "inter-1to5"): [4], ("100m", "intra-1to5"): [4],
    ("350m", "inter-1to5"): [4, 8], ("350m", "intra-1to5"): [4, 8],
    ("1b", "inter-1to5"): [4, 8], ("1b", "intra-1to5"): [5, 9],
    ("1b", "inter-1to3"): [3, 7, 11], ("1b", "inter-1to12"): [7],
    ("1b", "swa-1to5"): [5, 9, 13],
}


def middle_pattern(kind, ratio, n_layers):
    """make_pattern(kind, ratio, middle, n_layers): k = round(n / (ratio + 1)) kind layers, the other
    layers split into k + 1 runs whose lengths differ by at most one, longer runs first."""
    k = max(1, (2 * n_layers + ratio + 1) // (2 * (ratio + 1)))
    base, extra = divmod(n_layers - k, k + 1)
    runs = [base + (1 if i < extra else 0) for i in range(k + 1)]
    return kind.join("M" * run for run in runs)


def pattern_at(kind, indices, n_layers, other="M"):
    return "".join(kind if i + 1 in indices else other for i in range(n_layers))


def every_even(kind, n_layers):
    return pattern_at(kind, set(range(2, n_layers + 1, 2)), n_layers)


def pattern_of(scale, family):
    s = SCALES[scale]
    shape_scale = "100m" if scale == "tiny" else scale
    if family == "llama":
        return "T" * s["n_t"]
    if family == "mamba":
        return "M" * s["n_m"]
    if family == "swa-1to5":
        paper = PAPER.get((shape_scale, family))
        if paper:
            return pattern_at("T", paper, s["n_t"], other="W")
        return middle_pattern("T", 5, s["n_t"]).replace("M", "W")
    if family == "inter-1to1":
        return every_even("T", s["n_1to1"])
    if family == "intra-1to1":
        return every_even("H", s["n_h"])
    kind = "T" if family.startswith("inter") else "H"
    base_family = family if family.startswith(("inter", "intra")) else "intra-1to5"
    ratio = int(base_family.split("1to")[1])
    paper = PAPER.get((shape_scale, base_family))
    if paper:
        return pattern_at(kind, paper, s["n_h"])
    return middle_pattern(kind, ratio, s["n_h"])


def attention_section(s, with_dims=True):
    rope = {"theta": 500000, "llama3_scaling": True, "factor": 32, "low_freq_factor": 1,
            "high_freq_factor": 4, "original_context": 8192}
    if not with_dims:  # intra-hybrid presets: only the RoPE of the H attention branch
        return {"rope": rope}
    return {"n_heads": s["heads"], "n_kv_heads": s["kv"], "head_dim": s["head_dim"], "rope": rope}


def mamba_section(s):
    return {"d_ssm": s["d_ssm"], "head_dim": s["p"], "d_state": s["n"], "n_groups": 1, "conv_width": 4,
            "chunk": s["chunk"], "a_init_min": 0.01, "a_init_max": 2.0, "dt_init_min": 0.001,
            "dt_init_max": 0.1, "dt_init_floor": 0.0001}


def intra_section(s, family):
    intra = {"n_heads": s["intra_heads"], "n_kv_heads": s["intra_kv"], "qk_dim": s["qk"], "v_dim": s["v"],
             "d_ssm": s["intra_d_ssm"], "mamba_head_dim": s["intra_p"], "d_state": s["intra_n"],
             "norm": "group", "scaling": "none", "fusion": "subtract", "output": "separate",
             "value_sharing": "none"}
    if family == "hymba-like":
        # Joint output after an add needs equal branch widths: the Mamba branch gets d_ssm = v_dim
        # (= d_model), with the head dim of the Mamba layers where the intra one does not divide it.
        intra.update(norm="group", scaling="vector", fusion="add", output="joint", d_ssm=s["v"])
        if s["v"] % intra["mamba_head_dim"]:
            intra["mamba_head_dim"] = s["p"]
    elif family == "falconh1-like":
        intra.update(norm="none", scaling="none", fusion="concat", output="joint")
    return intra


def preset(scale, family):
    s = SCALES[scale]
    pattern = pattern_of(scale, family)
    config = {"name": f"{scale}-{family}", "vocab_size": s["vocab"], "d_model": s["d"], "pattern": pattern,
              "norm_eps": 1e-5, "init_std": 0.02}
    if "T" in pattern or "W" in pattern:
        config["attention"] = attention_section(s)
    elif "H" in pattern:
        config["attention"] = attention_section(s, with_dims=False)
    if "W" in pattern:
        config["sliding_window"] = {"window": s["window"], "sink": s["sink"], "rope_theta": 10000}
    if "M" in pattern or "H" in pattern:
        config["mamba"] = mamba_section(s)
    if "H" in pattern:
        config["intra"] = intra_section(s, family)
    config["ffn"] = {"kind": "dense", "d_ffn": s["ffn"], "n_experts": 8, "top_k": 1, "bias_update_rate": 0.001}
    return config


FAMILIES = ["llama", "mamba", "swa-1to5", "inter-1to1", "inter-1to3", "inter-1to5", "inter-1to12",
            "intra-1to5", "intra-1to1", "hymba-like", "falconh1-like"]


def main():
    root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "configs", "models")
    for scale in SCALES:
        os.makedirs(os.path.join(root, scale), exist_ok=True)
        for family in FAMILIES:
            with open(os.path.join(root, scale, family + ".json"), "w") as out:
                out.write(json.dumps(preset(scale, family), indent=2) + "\n")


if __name__ == "__main__":
    main()
