// Philox 4x32-10 (Salmon et al., "Parallel random numbers: as easy as 1, 2, 3", SC 2011).
//
// A counter-based generator: the output is a pure function of (counter, key), so the same seed and
// offset give the same numbers on the host and on any device, in any order, on any number of ranks.
// This header is plain C++ usable from both host code and CUDA kernels.
#pragma once

#include <cstdint>

#include "runtime/dtype.h"  // BRAID_HOST_DEVICE

namespace braid::philox {

struct Block {
  uint32_t v[4];
};

BRAID_HOST_DEVICE inline void mulhilo(uint32_t a, uint32_t b, uint32_t& hi, uint32_t& lo) {
  uint64_t product = uint64_t(a) * uint64_t(b);
  hi = uint32_t(product >> 32);
  lo = uint32_t(product);
}

// Ten rounds of the Philox 4x32 bijection with the published multipliers and Weyl key increments.
BRAID_HOST_DEVICE inline Block philox4x32_10(Block counter, uint32_t key0, uint32_t key1) {
  constexpr uint32_t kMul0 = 0xD2511F53u, kMul1 = 0xCD9E8D57u;
  constexpr uint32_t kWeyl0 = 0x9E3779B9u, kWeyl1 = 0xBB67AE85u;
  for (int round = 0; round < 10; ++round) {
    uint32_t hi0, lo0, hi1, lo1;
    mulhilo(kMul0, counter.v[0], hi0, lo0);
    mulhilo(kMul1, counter.v[2], hi1, lo1);
    counter = Block{{hi1 ^ counter.v[1] ^ key0, lo1, hi0 ^ counter.v[3] ^ key1, lo0}};
    key0 += kWeyl0;
    key1 += kWeyl1;
  }
  return counter;
}

// The engine's stream: element `index` of the stream (seed, offset) is lane index % 4 of the block
// with counter (offset + index / 4) as a 64-bit number in words 0-1, words 2-3 zero, key = seed.
BRAID_HOST_DEVICE inline Block block_at(uint64_t seed, uint64_t block_index) {
  Block counter{{uint32_t(block_index), uint32_t(block_index >> 32), 0u, 0u}};
  return philox4x32_10(counter, uint32_t(seed), uint32_t(seed >> 32));
}

// Uniform in (0, 1): 24 random bits, centred in their bucket so neither end is reached. Exact in
// double; rounding to float keeps it inside (0, 1).
BRAID_HOST_DEVICE inline double to_unit(uint32_t bits) {
  return (double(bits >> 8) + 0.5) * (1.0 / 16777216.0);
}

}  // namespace braid::philox
