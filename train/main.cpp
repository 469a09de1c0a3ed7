// The train binary: `build/train --model FILE --data GLOB --val GLOB [options]`, or
// `build/train --describe --model FILE [--seq-len L]` for the per-layer cost table.
// Every error ends the run with one line on stderr and exit code 1. Under mpirun or srun an error
// on any rank ends every rank of the job (MPI_Abort), so no rank waits forever for a dead peer.
#include <cstdio>
#include <iostream>
#include <string>

#include "layers/cost_model.h"
#include "layers/model_config.h"
#include "runtime/communicator.h"
#include "runtime/error.h"
#include "train/train_config.h"
#include "train/trainer.h"

namespace {

[[noreturn]] void fail(const std::string& message) {
  braid::Communicator& world = braid::Communicator::world();
  if (world.size() == 1) {
    std::fprintf(stderr, "error: %s\n", message.c_str());
    world.finalize();
    std::exit(1);
  }
  std::fprintf(stderr, "error: %s: %s\n", world.where().c_str(), message.c_str());
  world.abort(1);
}

}  // namespace

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
    braid::Communicator::world().finalize();
    return 0;
  } catch (const braid::Error& error) {
    fail(error.message());
  } catch (const std::exception& error) {
    fail(error.what());
  }
}
