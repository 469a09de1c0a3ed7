// The transforms from Philox words to uniform and normal values, shared by the host and CUDA fills
// so both backends compute the same numbers. Computed in double, then rounded to the tensor's dtype.
#pragma once

#include <cmath>

#include "runtime/philox.h"

namespace braid::philox {

// Uniform in (low, high) at stream position `position`.
BRAID_HOST_DEVICE inline double uniform_at(uint64_t seed, uint64_t position, double low, double high) {
  Block block = block_at(seed, position / 4);
  return low + (high - low) * to_unit(block.v[position % 4]);
}

// Normal at stream position `position`: Box-Muller on the lane pair holding it.
BRAID_HOST_DEVICE inline double normal_at(uint64_t seed, uint64_t position, double mean, double stddev) {
  Block block = block_at(seed, position / 4);
  const unsigned lane = unsigned(position % 4), pair = lane & ~1u;
  const double u1 = to_unit(block.v[pair]), u2 = to_unit(block.v[pair + 1]);
  const double radius = sqrt(-2.0 * log(u1)), angle = 6.283185307179586 * u2;
  return mean + stddev * radius * ((lane & 1u) ? sin(angle) : cos(angle));
}

}  // namespace braid::philox
