#include "runtime/allocator.h"

#include <cstdio>

#include "runtime/error.h"

namespace braid {

std::string format_bytes(size_t bytes) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB"};
  double value = double(bytes);
  int unit = 0;
  while (value >= 1024 && unit < 5) {
    value /= 1024;
    ++unit;
  }
  char text[32];
  std::snprintf(text, sizeof text, unit == 0 ? "%.0f %s" : "%.2f %s", value, units[unit]);
  return text;
}

Allocator& allocator_for(Device device) {
  return device.is_cpu() ? cpu_allocator() : cuda_allocator(device.index);
}

#ifndef BRAID_CUDA
Allocator& cuda_allocator(int index) {
  BRAID_FAIL("cuda:", index, " requested, but this build has no CUDA support (build with nvcc present)");
}
#endif

}  // namespace braid
