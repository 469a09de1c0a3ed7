// The train binary: `build/train --model FILE --data GLOB --val GLOB [options]`, or
// `build/train --describe --model FILE [--seq-len L]` for the per-layer cost table.
#include <cstdio>
#include <iostream>

#include <CLI/CLI.hpp>

#include "layers/cost_model.h"
#include "layers/model_config.h"
#include "runtime/error.h"

namespace {

int describe_model(const std::string& model_path, int64_t seq_len) {
  const braid::ModelConfig config = braid::load_model_config(model_path);
  std::cout << braid::describe(config, braid::model_cost(config, seq_len)) << std::endl;
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"braid train: train a hybrid attention + Mamba-2 language model"};
  std::string model_path;
  int64_t seq_len = 8192;
  bool describe = false;
  app.add_option("--model", model_path, "model config JSON (configs/models/<scale>/<family>.json)")->required();
  app.add_flag("--describe", describe, "print the per-layer parameter, FLOP and cache table and exit");
  app.add_option("--seq-len", seq_len, "context length for the cost figures and for training")
      ->capture_default_str();
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& error) {
    return app.exit(error);
  }
  try {
    if (describe) return describe_model(model_path, seq_len);
    std::fprintf(stderr, "error: nothing to do: pass --describe\n");
    return 1;
  } catch (const braid::Error& error) {
    std::fprintf(stderr, "error: %s\n", error.message().c_str());
    return 1;
  } catch (const std::exception& error) {
    std::fprintf(stderr, "error: %s\n", error.what());
    return 1;
  }
}
