// Training checkpoints: one directory per saved step under a root directory.
//
//   root/step_00001234/  model.safetensors      weights by dotted parameter name (fp32, DESIGN.md)
//                        optimizer.safetensors  AdamW moments, "m.<param>" and "v.<param>"
//                        config.json            model + training config
//                        state.json             step, tokens seen, RNG counters, data position, ...
//
// A checkpoint is written under root/step_00001234.tmp-<pid>/, every file and the directory are
// fsynced, and only then is it renamed to its final name: a crash (even kill -9) mid-write leaves
// the earlier checkpoints untouched and at most a stale temporary directory, which keep_last removes.
// Every file is integrity-checked on load (the safetensors checksums cover the two JSON files too).
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "runtime/safetensors.h"

namespace braid {

struct CheckpointContents {
  NamedTensors model, optimizer;
  std::string config_json, state_json;
};

// "step_00001234"
std::string checkpoint_dir_name(int64_t step);

// Creates `root_dir` if needed and proves a file can be written there; raises braid::Error with
// one clear line otherwise. Call before any training work.
void check_writable(const std::string& root_dir);

// Writes the checkpoint of `step` and returns its final directory. An existing checkpoint of the
// same step is replaced atomically. The JSON strings must parse as JSON.
std::string save_checkpoint(const std::string& root_dir, int64_t step, const CheckpointContents& contents);

// Reads and verifies every file of the checkpoint in `dir`; a missing or corrupt file raises
// braid::Error naming it (and the tensor, for a corrupt tensor).
CheckpointContents load_checkpoint(const std::string& dir);

// The directory of the highest step under `root_dir` whose four files are all present (only a
// finished save gives a step directory its name), or nothing when there is none. It is not
// verified here: load_checkpoint reports corruption rather than silently going back a checkpoint.
std::optional<std::string> find_latest_checkpoint(const std::string& root_dir);

// Deletes all but the `keep` highest-step checkpoints, and temporary directories left by saves
// whose process is gone.
void keep_last(const std::string& root_dir, int keep);

}  // namespace braid
