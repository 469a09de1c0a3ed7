// Where a tensor lives: the host, or one CUDA device.
#pragma once

#include <string>

namespace braid {

struct Device {
  enum class Kind { cpu, cuda };
  Kind kind = Kind::cpu;
  int index = 0;

  static Device cpu() { return {Kind::cpu, 0}; }
  static Device cuda(int index = 0) { return {Kind::cuda, index}; }
  // "cpu", "cuda", "cuda:1"; anything else raises braid::Error.
  static Device parse(const std::string& text);

  bool is_cpu() const { return kind == Kind::cpu; }
  bool is_cuda() const { return kind == Kind::cuda; }
  bool operator==(const Device& other) const { return kind == other.kind && index == other.index; }
  std::string to_string() const;
};

// True when this build has CUDA and a device is present.
bool cuda_available();
int cuda_device_count();

}  // namespace braid
