// The caching allocator behind device memory (DESIGN.md, Runtime).
//
// Device allocations are slow and synchronizing, so freed blocks are kept and reused:
//  - sizes are rounded to size classes (512 B multiples; 2 MiB multiples for large requests);
//  - requests up to 1 MiB are carved from 2 MiB segments ("small pool"), larger ones from their own
//    segments ("large pool"), so small blocks never fragment large segments;
//  - a free block is found best-fit among the free blocks of the same pool and stream (blocks are
//    reused only on the stream that freed them, so no cross-stream synchronization is needed);
//  - a block larger than needed is split, and a freed block is merged with free neighbours of its
//    segment;
//  - when the system refuses, fully free segments are returned and the request retried once; if it
//    still fails, braid::Error carries the report.
// Private pools keep the memory of a captured CUDA graph to itself: while a pool is active on a
// thread (begin_private_pool), that thread's requests are served only from the pool's segments (new
// ones are made for it), and blocks freed into the pool are reused only by later requests made while
// it is active, so what a graph's replays write is never handed to another user and survives between
// replays. The pool's segments are never returned to the system; release_private_pool (when the graph
// is destroyed) gives its blocks to the shared pool (live ones as they are freed).
// The system side is a SystemMemory (cudaMalloc/cudaFree for CUDA devices), so the caching logic is
// tested on the host with a fake one.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <thread>

#include "runtime/allocator.h"

namespace braid {

class SystemMemory {
 public:
  virtual ~SystemMemory() = default;
  virtual void* reserve(size_t bytes) = 0;  // nullptr when out of memory
  virtual void release(void* pointer) = 0;
  virtual std::string describe() const = 0;  // e.g. "cuda:0 (NVIDIA H100, 79.1 GiB total, 78 GiB free)"
};

using Stream = void*;  // an opaque stream handle (cudaStream_t); nullptr is the default stream
using PoolId = uint64_t;  // 0: the shared pool

class CachingAllocator final : public Allocator {
 public:
  static constexpr size_t kRound = 512;
  static constexpr size_t kSmallRequest = 1 << 20;   // up to 1 MiB: small pool
  static constexpr size_t kSmallSegment = 2 << 20;   // small pool segment size
  static constexpr size_t kLargeRound = 2 << 20;     // large segments are 2 MiB multiples

  CachingAllocator(Device device, std::unique_ptr<SystemMemory> system);
  ~CachingAllocator() override;

  void* allocate(size_t bytes) override { return allocate(bytes, nullptr); }
  void* allocate(size_t bytes, Stream stream);
  void deallocate(void* pointer) override;
  Device device() const override { return device_; }
  AllocatorStats stats() const override;
  void reset_peaks() override;
  std::string report() const override;

  // Returns every fully free segment of the shared pool to the system.
  void release_cached();

  // A new private pool (see above); its id is never 0 and never reused.
  PoolId create_private_pool();
  // Serves the calling thread's requests from `pool` until end_private_pool(); one pool at a time.
  void begin_private_pool(PoolId pool);
  void end_private_pool();
  // Gives the pool's blocks to the shared pool; the pool must not be active.
  void release_private_pool(PoolId pool);
  // The size class a request of `bytes` is served with.
  static size_t round_size(size_t bytes);

 private:
  struct Block {
    char* pointer;
    size_t size;
    Stream stream;
    bool small_pool;
    PoolId pool = 0;
    bool free = true;
    Block* previous = nullptr;  // neighbours within the same segment
    Block* next = nullptr;
  };
  struct BySize {
    bool operator()(const Block* a, const Block* b) const;
  };

  Block* find_free(size_t size, Stream stream, bool small_pool, PoolId pool);
  Block* new_segment(size_t size, Stream stream, bool small_pool, PoolId pool);
  void release_cached_locked();
  std::string report_locked() const;

  Device device_;
  std::unique_ptr<SystemMemory> system_;
  mutable std::mutex mutex_;
  std::set<Block*, BySize> free_blocks_;
  std::map<char*, Block*> live_blocks_;
  std::set<Block*> segments_;  // first block of each segment
  AllocatorStats stats_;
  PoolId next_pool_ = 1;
  PoolId active_pool_ = 0;           // the pool serving active_thread_'s requests (0: none)
  std::thread::id active_thread_;
};

}  // namespace braid
