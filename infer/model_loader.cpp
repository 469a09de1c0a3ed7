#include "infer/model_loader.h"

#include <nlohmann/json.hpp>

#include <filesystem>
#include <map>

#include "layers/ffn.h"
#include "runtime/rng.h"
#include "train/checkpoint.h"

namespace braid::infer {

namespace {

DType activation_dtype(const Device& device, const std::string& dtype) {
  const std::string chosen = dtype.empty() ? (device.is_cuda() ? "bf16" : "fp32") : dtype;
  BRAID_CHECK(chosen == "fp32" || chosen == "bf16", "--dtype ", chosen, ": expected fp32 or bf16");
  BRAID_CHECK(chosen == "fp32" || device.is_cuda(), "--dtype ", chosen,
              ": the CPU backend computes in fp32; bf16 needs --device cuda");
  return chosen == "bf16" ? DType::bf16 : DType::f32;
}

Device checked_device(const std::string& text) {
  const Device device = Device::parse(text);
  if (device.is_cuda())
    BRAID_CHECK(device.index < cuda_device_count(), "--device ", text, ": ", cuda_device_count(),
                " CUDA device(s) usable here (none without a GPU or in a CPU-only build)");
  return device;
}

}  // namespace

std::string resolve_checkpoint_dir(const std::string& path) {
  namespace fs = std::filesystem;
  BRAID_CHECK(fs::exists(path), path, ": no such checkpoint or run directory");
  if (fs::exists(fs::path(path) / "state.json")) return path;
  std::optional<std::string> latest = find_latest_checkpoint(path);
  BRAID_CHECK(latest.has_value(), path, ": no complete checkpoint there (expected step_NNNNNNNN/ directories)");
  return *latest;
}

void load_weights(HybridLM& model, const NamedTensors& tensors, const std::string& source) {
  std::map<std::string, Tensor> remaining(tensors.begin(), tensors.end());
  auto take = [&](const std::string& name, Tensor destination) {
    auto found = remaining.find(name);
    BRAID_CHECK(found != remaining.end(), source, ": has no tensor ", name, " (the model config needs it)");
    BRAID_CHECK(found->second.shape() == destination.shape(), source, ": ", name, " has shape ",
                shape_str(found->second.shape()), ", the model config needs ", shape_str(destination.shape()));
    destination.copy_from(found->second);
    remaining.erase(found);
  };
  for (const Parameter& parameter : model.named_parameters()) take(parameter.name, parameter.variable->value);
  for (size_t i = 0; i < model.blocks().size(); ++i)
    if (MoE* moe = model.blocks()[i]->moe())
      take("layers." + std::to_string(i) + ".ffn.routing_bias", moe->routing_bias());  // a handle to the buffer
  BRAID_CHECK(remaining.empty(), source, ": tensor ", remaining.empty() ? "" : remaining.begin()->first,
              " is not part of the model config (", remaining.size(), " unknown tensor(s))");
}

LoadedModel load_model(const ModelSource& source) {
  BRAID_CHECK(source.checkpoint.empty() != source.preset.empty(),
              "give exactly one of --checkpoint DIR (trained weights) and --preset FILE (random weights)");
  const Device device = checked_device(source.device);
  const DType dtype = activation_dtype(device, source.dtype);
  LoadedModel loaded;
  // fp32 parameters: the checkpoint's master weights; bf16 is the activation dtype (DESIGN.md).
  const TensorOptions options{device, DType::f32};
  if (!source.preset.empty()) {
    loaded.model = std::make_unique<HybridLM>(load_model_config(source.preset), options);
    Generator generator(source.seed);
    loaded.model->initialize(generator);
    loaded.origin = "preset " + source.preset;
  } else {
    const std::string dir = resolve_checkpoint_dir(source.checkpoint);
    CheckpointContents contents = load_checkpoint(dir);
    nlohmann::json config;
    try {
      config = nlohmann::json::parse(contents.config_json);
    } catch (const nlohmann::json::exception& error) {
      BRAID_FAIL(dir, "/config.json: malformed JSON (", error.what(), ")");
    }
    BRAID_CHECK(config.is_object() && config.contains("model"), dir, "/config.json: no \"model\" section");
    loaded.model = std::make_unique<HybridLM>(parse_model_config(config["model"].dump(), dir + "/config.json"), options);
    load_weights(*loaded.model, contents.model, dir + "/model.safetensors");
    if (config.contains("train") && config["train"].is_object()) {
      const nlohmann::json& train = config["train"];
      if (train.contains("seq_len") && train["seq_len"].is_number_integer())
        loaded.train_seq_len = train["seq_len"].get<int64_t>();
      if (train.contains("tokenizer") && train["tokenizer"].is_string())
        loaded.tokenizer = train["tokenizer"].get<std::string>();
    }
    loaded.origin = dir;
  }
  loaded.model->set_activation_dtype(dtype);
  return loaded;
}

}  // namespace braid::infer
