// Random fills from the Philox stream, identical on the host and on CUDA devices.
//
// Element i of the tensor (row-major) takes stream position offset + i. Normal values use the
// Box-Muller transform on lane pairs (0,1) and (2,3) of each block, so the `offset` of a normal fill
// should be a multiple of 4 for two fills to never share a block; `next_offset` does the bookkeeping.
#pragma once

#include <cstdint>

#include "runtime/tensor.h"

namespace braid {

// Uniform in (low, high). Tensor must be contiguous f32, f64 or bf16, on any device.
void fill_uniform(Tensor& tensor, uint64_t seed, uint64_t offset, double low = 0.0, double high = 1.0);
// Normal with the given mean and standard deviation.
void fill_normal(Tensor& tensor, uint64_t seed, uint64_t offset, double mean = 0.0, double stddev = 1.0);

// A seeded generator that hands out disjoint stream ranges, so consecutive fills never overlap.
class Generator {
 public:
  explicit Generator(uint64_t seed, uint64_t offset = 0) : seed_(seed), offset_(offset) {}
  void uniform(Tensor& tensor, double low = 0.0, double high = 1.0);
  void normal(Tensor& tensor, double mean = 0.0, double stddev = 1.0);
  // Reserves `count` stream positions (rounded up to a whole block) and returns the first.
  uint64_t take(uint64_t count);
  uint64_t seed() const { return seed_; }
  uint64_t offset() const { return offset_; }

 private:
  uint64_t seed_;
  uint64_t offset_;
};

}  // namespace braid
