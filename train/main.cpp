// The train binary: `build/train --model FILE --data GLOB --val GLOB [options]`, or
// `build/train --describe --model FILE [--seq-len L]` for the per-layer cost table.
// Every error ends the run with one line on stderr and exit code 1.
#include <cstdio>
#include <iostream>

#include "layers/cost_model.h"
#include "layers/model_config.h"
#include "runtime/error.h"
#include "train/train_config.h"
#include "train/trainer.h"

int main(int argc, char** argv) {
  try {
    braid::TrainConfig config;
    bool describe = false;
    const int exit_code = braid::parse_train_command_line(argc, argv, config, describe);
    if (exit_code >= 0) return exit_code;
    if (describe) {
      BRAID_CHECK(!config.model.empty(), "--describe needs --model FILE");
      const braid::ModelConfig model = braid::load_model_config(config.model);
      std::cout << braid::describe(model, braid::model_cost(model, config.seq_len)) << std::endl;
      return 0;
    }
    braid::Trainer(config).run();
    return 0;
  } catch (const braid::Error& error) {
    std::fprintf(stderr, "error: %s\n", error.message().c_str());
    return 1;
  } catch (const std::exception& error) {
    std::fprintf(stderr, "error: %s\n", error.what());
    return 1;
  }
}
