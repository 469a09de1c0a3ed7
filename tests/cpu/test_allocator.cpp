// Allocator statistics, and the caching allocator's pools, splitting, merging and out-of-memory
// report, driven on the host through a fake system memory with a hard limit.
#include <cstdlib>
#include <thread>

#include "runtime/caching_allocator.h"
#include "runtime/tensor.h"
#include "tests/test_util.h"

namespace braid {
namespace {

class FakeMemory final : public SystemMemory {
 public:
  FakeMemory(size_t limit, size_t* in_use) : limit_(limit), in_use_(in_use) {}
  void* reserve(size_t bytes) override {
    if (*in_use_ + bytes > limit_) return nullptr;
    *in_use_ += bytes;
    void* pointer = std::malloc(bytes);
    sizes_[pointer] = bytes;
    return pointer;
  }
  void release(void* pointer) override {
    *in_use_ -= sizes_.at(pointer);
    sizes_.erase(pointer);
    std::free(pointer);
  }
  std::string describe() const override { return "fake device"; }

 private:
  size_t limit_;
  size_t* in_use_;
  std::map<void*, size_t> sizes_;
};

constexpr size_t MiB = 1 << 20;

TEST(CpuAllocator, StatisticsFollowTensors) {
  Allocator& allocator = cpu_allocator();
  const AllocatorStats before = allocator.stats();
  allocator.reset_peaks();
  {
    Tensor a = Tensor::empty({1000}, DType::f32);  // 4000 B -> 4032 with 64-byte rounding
    EXPECT_EQ(reinterpret_cast<uintptr_t>(a.raw_data()) % 64, 0u);
    Tensor b = Tensor::empty({10}, DType::f64);     // 80 B -> 128
    AllocatorStats during = allocator.stats();
    EXPECT_EQ(during.allocated - before.allocated, 4032u + 128u);
    EXPECT_EQ(during.allocations - before.allocations, 2u);
    EXPECT_GE(during.peak_allocated, during.allocated);
  }
  AllocatorStats after = allocator.stats();
  EXPECT_EQ(after.allocated, before.allocated);
  EXPECT_EQ(after.frees - before.frees, 2u);
  EXPECT_GE(after.peak_allocated, before.allocated + 4160u);
  EXPECT_NE(allocator.report().find("cpu allocator"), std::string::npos);
}

TEST(CpuAllocator, OverAllocationRaisesWithReport) {
  try {
    Tensor::empty({int64_t(1) << 50}, DType::f64);  // 8 PiB
    FAIL() << "expected braid::Error";
  } catch (const Error& error) {
    std::string text = error.what();
    EXPECT_NE(text.find("out of memory on cpu"), std::string::npos) << text;
    EXPECT_NE(text.find("8.00 PiB"), std::string::npos) << text;
    EXPECT_NE(text.find("cpu allocator:"), std::string::npos) << text;
  }
}

TEST(CachingAllocator, SizeClasses) {
  EXPECT_EQ(CachingAllocator::round_size(1), 512u);
  EXPECT_EQ(CachingAllocator::round_size(512), 512u);
  EXPECT_EQ(CachingAllocator::round_size(513), 1024u);
  EXPECT_EQ(CachingAllocator::round_size(0), 512u);
}

TEST(CachingAllocator, SmallBlocksShareASegmentAndAreReused) {
  size_t in_use = 0;
  CachingAllocator allocator(Device::cuda(0), std::make_unique<FakeMemory>(64 * MiB, &in_use));
  void* a = allocator.allocate(1000);
  void* b = allocator.allocate(3000);
  AllocatorStats stats = allocator.stats();
  EXPECT_EQ(stats.allocated, 1024u + 3072u);
  EXPECT_EQ(stats.reserved, 2 * MiB);  // one small segment
  EXPECT_EQ(stats.system_allocations, 1u);
  EXPECT_EQ(static_cast<char*>(b) - static_cast<char*>(a), 1024);  // carved consecutively
  allocator.deallocate(a);
  void* c = allocator.allocate(900);  // same size class: best fit is a's old block
  EXPECT_EQ(c, a);
  EXPECT_EQ(allocator.stats().system_allocations, 1u);
  EXPECT_EQ(allocator.stats().allocations, 3u);
  EXPECT_EQ(allocator.stats().frees, 1u);
  allocator.deallocate(b);
  allocator.deallocate(c);
  EXPECT_EQ(allocator.stats().allocated, 0u);
  EXPECT_EQ(allocator.stats().peak_allocated, 1024u + 3072u);
  EXPECT_EQ(allocator.stats().reserved, 2 * MiB);  // cached, not returned
  allocator.release_cached();
  EXPECT_EQ(allocator.stats().reserved, 0u);
  EXPECT_EQ(in_use, 0u);
}

TEST(CachingAllocator, SplitBlocksMergeBackIntoOneSegment) {
  size_t in_use = 0;
  CachingAllocator allocator(Device::cuda(0), std::make_unique<FakeMemory>(64 * MiB, &in_use));
  void* a = allocator.allocate(3 * MiB);  // large pool: a 4 MiB segment, no tail split (1 MiB left)
  EXPECT_EQ(allocator.stats().reserved, 4 * MiB);
  allocator.deallocate(a);
  void* b = allocator.allocate(1536 * 1024);  // 1.5 MiB from the cached 4 MiB: splits 2.5 MiB off
  void* c = allocator.allocate(2 * MiB);      // served from the split tail, no new segment
  EXPECT_EQ(b, a);
  EXPECT_EQ(static_cast<char*>(c) - static_cast<char*>(b), 1536 * 1024);
  EXPECT_EQ(allocator.stats().system_allocations, 1u);
  allocator.deallocate(b);
  allocator.deallocate(c);
  // Merged back: the whole 4 MiB serves one request again.
  void* d = allocator.allocate(4 * MiB);
  EXPECT_EQ(d, a);
  EXPECT_EQ(allocator.stats().system_allocations, 1u);
  allocator.deallocate(d);
}

TEST(CachingAllocator, StreamsKeepSeparateFreeLists) {
  size_t in_use = 0;
  CachingAllocator allocator(Device::cuda(0), std::make_unique<FakeMemory>(64 * MiB, &in_use));
  int stream_one = 0, stream_two = 0;
  void* a = allocator.allocate(4096, &stream_one);
  allocator.deallocate(a);
  void* b = allocator.allocate(4096, &stream_two);
  EXPECT_NE(a, b);
  EXPECT_EQ(allocator.stats().system_allocations, 2u);
  void* c = allocator.allocate(4096, &stream_one);
  EXPECT_EQ(c, a);
  allocator.deallocate(b);
  allocator.deallocate(c);
}

TEST(CachingAllocator, OutOfMemoryReleasesCacheThenReports) {
  size_t in_use = 0;
  CachingAllocator allocator(Device::cuda(0), std::make_unique<FakeMemory>(16 * MiB, &in_use));
  void* a = allocator.allocate(6 * MiB);
  allocator.deallocate(a);  // cached
  void* b = allocator.allocate(12 * MiB);  // needs the cached 6 MiB returned first
  EXPECT_EQ(allocator.stats().reserved, 12 * MiB);
  try {
    allocator.allocate(8 * MiB);
    FAIL() << "expected braid::Error";
  } catch (const Error& error) {
    std::string text = error.what();
    EXPECT_NE(text.find("out of memory on cuda:0"), std::string::npos) << text;
    EXPECT_NE(text.find("12.00 MiB allocated in 1 blocks"), std::string::npos) << text;
    EXPECT_NE(text.find("fake device"), std::string::npos) << text;
  }
  allocator.deallocate(b);  // still consistent after the failure
  EXPECT_EQ(allocator.stats().allocated, 0u);
  EXPECT_THROW(allocator.deallocate(reinterpret_cast<void*>(0x1234)), Error);
}

// A private pool (a CUDA graph's memory): blocks freed inside it are reused only inside it, never by
// requests outside it or from other threads, its segments survive release_cached(), and once
// released its blocks (live ones as they are freed) rejoin the shared pool.
TEST(CachingAllocator, PrivatePoolKeepsItsBlocksUntilReleased) {
  size_t in_use = 0;
  CachingAllocator allocator(Device::cuda(0), std::make_unique<FakeMemory>(64 * MiB, &in_use));
  const PoolId pool = allocator.create_private_pool();
  EXPECT_NE(pool, 0u);
  EXPECT_NE(allocator.create_private_pool(), pool);
  allocator.begin_private_pool(pool);
  void* small = allocator.allocate(1000);
  void* large = allocator.allocate(3 * MiB);
  void* kept = allocator.allocate(5000);  // stays live past the pool's release
  allocator.deallocate(small);
  allocator.deallocate(large);
  EXPECT_EQ(allocator.allocate(1000), small);  // reused inside the pool
  allocator.deallocate(small);
  void* other_thread = nullptr;
  std::thread([&] { other_thread = allocator.allocate(1000); }).join();
  EXPECT_NE(other_thread, small);
  allocator.end_private_pool();

  void* outside_small = allocator.allocate(1000);
  void* outside_large = allocator.allocate(3 * MiB);
  EXPECT_NE(outside_small, small);
  EXPECT_NE(outside_large, large);
  allocator.deallocate(outside_small);
  allocator.deallocate(outside_large);
  allocator.deallocate(other_thread);
  const size_t pool_bytes = 2 * MiB + 4 * MiB;  // one small segment, one 3 MiB request rounded up
  allocator.release_cached();
  EXPECT_EQ(in_use, pool_bytes);  // the pool's segments stay

  allocator.release_private_pool(pool);
  EXPECT_EQ(allocator.allocate(3 * MiB), large);  // now shared
  allocator.deallocate(large);
  allocator.release_cached();
  EXPECT_EQ(in_use, 2 * MiB);  // the small segment still holds `kept`
  allocator.deallocate(kept);
  allocator.release_cached();
  EXPECT_EQ(in_use, 0u);
  EXPECT_EQ(allocator.stats().allocated, 0u);
}

TEST(CachingAllocator, PrivatePoolMisuseRaises) {
  size_t in_use = 0;
  CachingAllocator allocator(Device::cuda(0), std::make_unique<FakeMemory>(64 * MiB, &in_use));
  const PoolId pool = allocator.create_private_pool();
  EXPECT_THROW(allocator.begin_private_pool(0), Error);
  EXPECT_THROW(allocator.begin_private_pool(pool + 1), Error);
  allocator.begin_private_pool(pool);
  EXPECT_THROW(allocator.begin_private_pool(pool), Error);
  EXPECT_THROW(allocator.release_private_pool(pool), Error);
  allocator.end_private_pool();
  EXPECT_THROW(allocator.release_private_pool(0), Error);
  allocator.release_private_pool(pool);
}

}  // namespace
}  // namespace braid
