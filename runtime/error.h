// The engine's one error type and the macros that raise it.
//
// Every failure carries the call (or condition) that failed, the file and line, and a human
// message. Binaries catch braid::Error at the top and print one line.
#pragma once

#include <sstream>
#include <stdexcept>
#include <string>

namespace braid {

class Error : public std::runtime_error {
 public:
  Error(std::string call, std::string file, int line, std::string message);

  const std::string& call() const { return call_; }
  const std::string& file() const { return file_; }
  int line() const { return line_; }
  const std::string& message() const { return message_; }

 private:
  std::string call_, file_;
  int line_;
  std::string message_;
};

// Joins any streamable arguments into one string: str("shape ", 3, "x", 4).
template <typename... Args>
std::string str(const Args&... args) {
  std::ostringstream out;
  (out << ... << args);
  return out.str();
}

[[noreturn]] void raise(const char* call, const char* file, int line, const std::string& message);

}  // namespace braid

// BRAID_CHECK(cond, parts...): raise braid::Error naming the condition when it is false.
#define BRAID_CHECK(cond, ...)                                                   \
  do {                                                                           \
    if (!(cond)) ::braid::raise(#cond, __FILE__, __LINE__, ::braid::str(__VA_ARGS__)); \
  } while (0)

// BRAID_FAIL(parts...): raise unconditionally.
#define BRAID_FAIL(...) ::braid::raise("", __FILE__, __LINE__, ::braid::str(__VA_ARGS__))
