// Runs of build/train, alone or under `mpirun -np N`, on a micro MoE hybrid and synthetic shards,
// and comparisons of their checkpoints and loss curves: shared by the data-parallel tests of the
// CPU backend (tests/integration) and of CUDA + NCCL (tests/cuda).
#pragma once

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <string>
#include <vector>

#include "runtime/rng.h"
#include "runtime/token_shard.h"
#include "tests/run_command.h"
#include "train/checkpoint.h"

namespace braid::testing {

// CI runs as root; ranks may outnumber cores; one OpenMP thread per rank. NVLink multicast (NVLS)
// stays off: the GPU machines forbid it.
inline const char* kMpirun =
    "mpirun --allow-run-as-root --oversubscribe --bind-to none -x OMP_NUM_THREADS=1 -x NCCL_NVLS_ENABLE=0";

inline bool mpirun_available() { return std::system("command -v mpirun > /dev/null 2>&1") == 0; }

// Tokens with structure a model can learn: a noisy walk over 64 ids.
inline void write_walk_shard(const std::filesystem::path& path, size_t count, uint64_t seed) {
  Tensor noise = Tensor::empty({int64_t(count)}, DType::f64);
  fill_uniform(noise, seed, 0);
  std::vector<double> u = noise.to_doubles();
  std::vector<uint32_t> tokens(count);
  uint32_t token = 0;
  for (size_t i = 0; i < count; ++i) tokens[i] = token = (token + (u[i] < 0.8 ? 1 : uint32_t(u[i] * 640))) % 64;
  write_token_shard(path.string(), tokens);
}

class TrainRuns {
 public:
  // Sets up a fresh directory with the model and shards; `binary` is build/train.
  TrainRuns(std::filesystem::path binary, const std::string& name) : binary_(std::move(binary)) {
    dir_ = std::filesystem::temp_directory_path() / ("braid_dp_" + std::to_string(::getpid()) + "_" + name);
    std::filesystem::remove_all(dir_);
    std::filesystem::create_directories(dir_);
    // A micro hybrid with an MoE feed-forward: routing-bias updates must see every rank's loads.
    // Mamba head and state sizes and the chunk are multiples of 16, as the CUDA SSD kernels need.
    std::ofstream(dir_ / "model.json") << R"({
      "name": "micro-moe", "vocab_size": 64, "d_model": 16, "pattern": "MTH",
      "attention": {"n_heads": 2, "n_kv_heads": 1, "head_dim": 8},
      "mamba": {"d_ssm": 32, "head_dim": 16, "d_state": 16, "chunk": 16},
      "intra": {"n_heads": 2, "n_kv_heads": 1, "qk_dim": 8, "v_dim": 16, "d_ssm": 16,
                "mamba_head_dim": 16, "d_state": 16},
      "ffn": {"kind": "moe", "d_ffn": 32, "n_experts": 4, "top_k": 1, "bias_update_rate": 0.01}})";
    write_walk_shard(dir_ / "train.bin", 40000, 1);
    write_walk_shard(dir_ / "val.bin", 2000, 2);
  }
  ~TrainRuns() { std::filesystem::remove_all(dir_); }

  const std::filesystem::path& dir() const { return dir_; }

  // The train command line writing into dir/out, without a launcher.
  std::string arguments(const std::string& out, const std::string& extra) const {
    return binary_.string() + " --model " + (dir_ / "model.json").string() + " --data " + (dir_ / "train.bin").string() +
           " --val " + (dir_ / "val.bin").string() + " --seq-len 16 --micro-batch 4 --lr 3e-3 --eval-every 0 " +
           "--eval-batches 1 --threads 1 --out " + (dir_ / out).string() + " " + extra;
  }

  // `ranks` = 0: the binary alone, without mpirun.
  Outcome run(int ranks, const std::string& out, const std::string& extra) const {
    const std::string command = (ranks > 0 ? std::string(kMpirun) + " -np " + std::to_string(ranks) + " " : "") +
                                arguments(out, extra) + " 2>&1";
    return run_command(command);
  }

  std::vector<double> losses(const std::string& out) const {
    std::vector<double> values;
    std::ifstream in(dir_ / out / "metrics.jsonl");
    for (std::string line; std::getline(in, line);) {
      auto json = nlohmann::json::parse(line);
      if (json.contains("loss")) values.push_back(json["loss"].get<double>());
    }
    return values;
  }

  // The weights (or the AdamW moments) of a checkpoint under dir, by name.
  std::map<std::string, std::vector<double>> tensors(const std::string& checkpoint, bool optimizer = false) const {
    CheckpointContents contents = load_checkpoint((dir_ / checkpoint).string());
    std::map<std::string, std::vector<double>> named;
    for (const auto& [name, tensor] : optimizer ? contents.optimizer : contents.model) named[name] = tensor.to_doubles();
    return named;
  }

 private:

  std::filesystem::path binary_, dir_;
};

// Largest |a - b| / (|b| + max|b|) over the elements of every tensor: relative to the tensor's
// largest value, so elements near zero are not judged by their own tiny magnitude.
inline double max_relative_difference(const std::map<std::string, std::vector<double>>& a,
                                      const std::map<std::string, std::vector<double>>& b) {
  EXPECT_EQ(a.size(), b.size());
  double worst = 0;
  for (const auto& [name, values] : b) {
    auto found = a.find(name);
    if (found == a.end()) {
      ADD_FAILURE() << name << " is missing";
      continue;
    }
    EXPECT_EQ(found->second.size(), values.size()) << name;
    double scale = 0;
    for (double v : values) scale = std::max(scale, std::abs(v));
    for (size_t i = 0; i < values.size() && i < found->second.size(); ++i)
      worst = std::max(worst, std::abs(found->second[i] - values[i]) / (std::abs(values[i]) + scale + 1e-30));
  }
  return worst;
}

}  // namespace braid::testing
