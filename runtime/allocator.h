// The allocator interface shared by the host and CUDA allocators, with their common statistics.
//
// Tensors never call malloc or cudaMalloc directly: storage comes from an Allocator, so memory use
// is counted in one place and reported the same way on every backend.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "runtime/device.h"

namespace braid {

struct AllocatorStats {
  size_t allocated = 0;       // bytes handed out to live blocks now
  size_t reserved = 0;        // bytes obtained from the system (>= allocated for a caching allocator)
  size_t peak_allocated = 0;  // high-water mark of `allocated`
  size_t peak_reserved = 0;   // high-water mark of `reserved`
  uint64_t allocations = 0;   // number of allocate() calls served
  uint64_t frees = 0;         // number of deallocate() calls
  uint64_t system_allocations = 0;  // calls into the system allocator (cudaMalloc / aligned_alloc)
};

class Allocator {
 public:
  virtual ~Allocator() = default;
  // Returns at least `bytes` bytes; raises braid::Error with report() on out-of-memory.
  virtual void* allocate(size_t bytes) = 0;
  virtual void deallocate(void* pointer) = 0;
  virtual Device device() const = 0;
  virtual AllocatorStats stats() const = 0;
  // Resets the peaks to the current values.
  virtual void reset_peaks() = 0;
  // A few human lines: the statistics, and for the caching allocator its pools.
  virtual std::string report() const = 0;
};

// The host allocator (64-byte aligned). One per process.
Allocator& cpu_allocator();
// The caching allocator of CUDA device `index`; raises braid::Error in a build without CUDA.
Allocator& cuda_allocator(int index);
// The allocator serving `device`.
Allocator& allocator_for(Device device);

// "1.50 GiB" style sizes for reports.
std::string format_bytes(size_t bytes);

}  // namespace braid
