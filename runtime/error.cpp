#include "runtime/error.h"

namespace braid {

static std::string format_error(const std::string& call, const std::string& file, int line,
                                const std::string& message) {
  std::string where = file + ":" + std::to_string(line);
  if (call.empty()) return where + ": " + message;
  return where + ": " + message + " [" + call + "]";
}

Error::Error(std::string call, std::string file, int line, std::string message)
    : std::runtime_error(format_error(call, file, line, message)),
      call_(std::move(call)),
      file_(std::move(file)),
      line_(line),
      message_(std::move(message)) {}

void raise(const char* call, const char* file, int line, const std::string& message) {
  throw Error(call, file, line, message);
}

}  // namespace braid
