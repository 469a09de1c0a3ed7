// The host allocator: 64-byte aligned blocks (a cache line, and an AVX-512 vector) with statistics.
#include <malloc.h>

#include <cstdlib>
#include <mutex>
#include <unordered_map>

#include "runtime/allocator.h"
#include "runtime/error.h"

namespace braid {

namespace {

constexpr size_t kAlignment = 64;

class CpuAllocator final : public Allocator {
 public:
  CpuAllocator() {
    // Keep large blocks in the heap instead of fresh mmaps: a training step frees and re-allocates
    // the same big activations every step, and new mappings cost a page fault per 4 KiB.
    mallopt(M_MMAP_THRESHOLD, 1 << 30);
    mallopt(M_TRIM_THRESHOLD, 1 << 30);
  }

  void* allocate(size_t bytes) override {
    size_t rounded = (bytes + kAlignment - 1) / kAlignment * kAlignment;
    if (rounded == 0) rounded = kAlignment;
    void* pointer = std::aligned_alloc(kAlignment, rounded);
    std::lock_guard lock(mutex_);
    if (pointer == nullptr)
      BRAID_FAIL("out of memory on cpu: cannot allocate ", format_bytes(bytes), "\n", report_locked());
    sizes_[pointer] = rounded;
    stats_.allocated += rounded;
    stats_.reserved += rounded;
    stats_.allocations += 1;
    stats_.system_allocations += 1;
    stats_.peak_allocated = std::max(stats_.peak_allocated, stats_.allocated);
    stats_.peak_reserved = std::max(stats_.peak_reserved, stats_.reserved);
    return pointer;
  }

  void deallocate(void* pointer) override {
    if (pointer == nullptr) return;
    {
      std::lock_guard lock(mutex_);
      auto found = sizes_.find(pointer);
      BRAID_CHECK(found != sizes_.end(), "cpu allocator: free of an unknown pointer");
      stats_.allocated -= found->second;
      stats_.reserved -= found->second;
      stats_.frees += 1;
      sizes_.erase(found);
    }
    std::free(pointer);
  }

  Device device() const override { return Device::cpu(); }

  AllocatorStats stats() const override {
    std::lock_guard lock(mutex_);
    return stats_;
  }

  void reset_peaks() override {
    std::lock_guard lock(mutex_);
    stats_.peak_allocated = stats_.allocated;
    stats_.peak_reserved = stats_.reserved;
  }

  std::string report() const override {
    std::lock_guard lock(mutex_);
    return report_locked();
  }

 private:
  std::string report_locked() const {
    return str("cpu allocator: ", format_bytes(stats_.allocated), " allocated in ", sizes_.size(),
               " blocks (peak ", format_bytes(stats_.peak_allocated), "), ", stats_.allocations,
               " allocations, ", stats_.frees, " frees");
  }

  mutable std::mutex mutex_;
  std::unordered_map<void*, size_t> sizes_;
  AllocatorStats stats_;
};

}  // namespace

Allocator& cpu_allocator() {
  static CpuAllocator allocator;
  return allocator;
}

}  // namespace braid
