// Running the built programs from the tests that drive them end to end.
#pragma once

#include <sys/wait.h>

#include <cstdio>
#include <string>

namespace braid::testing {

struct Outcome {
  int exit_code;       // 128 when the command did not exit normally (e.g. killed by a signal)
  std::string output;  // what it printed on stdout (a command that wants stderr too ends in 2>&1)
};

// Runs `command` through the shell and waits for it.
inline Outcome run_command(const std::string& command) {
  Outcome outcome{0, ""};
  FILE* pipe = popen(command.c_str(), "r");
  if (!pipe) return {128, "popen failed for: " + command};
  char buffer[4096];
  while (size_t n = fread(buffer, 1, sizeof buffer, pipe)) outcome.output.append(buffer, n);
  const int status = pclose(pipe);
  outcome.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128;
  return outcome;
}

}  // namespace braid::testing
