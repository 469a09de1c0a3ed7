// Loading a model for inference: from a checkpoint (a step directory, or a run directory meaning its
// latest complete checkpoint) or from a preset with seeded random weights (pure-speed benchmarks).
// The device and dtype choice lives here only: fp32 parameters everywhere (the checkpoint's master
// weights), activations in bf16 or fp32 on CUDA and fp32 on the CPU (DESIGN.md "Precision").
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "layers/hybrid_lm.h"
#include "runtime/safetensors.h"

namespace braid::infer {

struct ModelSource {
  std::string checkpoint;  // step directory or run directory
  std::string preset;      // model config JSON, random weights (exclusive with checkpoint)
  uint64_t seed = 1234;    // initialization seed of a preset
  std::string device = "cpu";
  std::string dtype;       // empty: bf16 on CUDA, fp32 on the CPU
};

struct LoadedModel {
  std::unique_ptr<HybridLM> model;
  std::string origin;          // the checkpoint directory, or "preset <file>"
  int64_t train_seq_len = 0;   // the context it was trained at (0 for a preset)
  std::string tokenizer;       // the tokenizer the run named ("" when none)
};

// The step directory `path` names: itself when it holds a checkpoint's state.json, else the latest
// complete checkpoint under it. Raises braid::Error when there is none.
std::string resolve_checkpoint_dir(const std::string& path);

// Copies `tensors` into the model's parameters (and MoE routing biases). Every model tensor must be
// present with its shape, and every given tensor must belong to the model; the first violation
// raises braid::Error naming the tensor and `source`.
void load_weights(HybridLM& model, const NamedTensors& tensors, const std::string& source);

LoadedModel load_model(const ModelSource& source);

}  // namespace braid::infer
