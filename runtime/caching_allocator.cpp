#include "runtime/caching_allocator.h"

#include <algorithm>
#include <tuple>

#include "runtime/error.h"

namespace braid {

bool CachingAllocator::BySize::operator()(const Block* a, const Block* b) const {
  return std::tie(a->pool, a->small_pool, a->stream, a->size, a->pointer) <
         std::tie(b->pool, b->small_pool, b->stream, b->size, b->pointer);
}

CachingAllocator::CachingAllocator(Device device, std::unique_ptr<SystemMemory> system)
    : device_(device), system_(std::move(system)) {}

CachingAllocator::~CachingAllocator() {
  std::lock_guard lock(mutex_);
  release_cached_locked();
  // Blocks still live at exit (static tensors) are left to the driver's teardown.
}

size_t CachingAllocator::round_size(size_t bytes) {
  if (bytes == 0) return kRound;
  return (bytes + kRound - 1) / kRound * kRound;
}

CachingAllocator::Block* CachingAllocator::find_free(size_t size, Stream stream, bool small_pool, PoolId pool) {
  Block probe{nullptr, size, stream, small_pool, pool};
  auto found = free_blocks_.lower_bound(&probe);
  if (found == free_blocks_.end()) return nullptr;
  Block* block = *found;
  if (block->pool != pool || block->small_pool != small_pool || block->stream != stream) return nullptr;
  free_blocks_.erase(found);
  return block;
}

CachingAllocator::Block* CachingAllocator::new_segment(size_t size, Stream stream, bool small_pool, PoolId pool) {
  size_t segment_size =
      small_pool ? kSmallSegment : (size + kLargeRound - 1) / kLargeRound * kLargeRound;
  void* memory = system_->reserve(segment_size);
  if (memory == nullptr) {
    release_cached_locked();
    memory = system_->reserve(segment_size);
  }
  if (memory == nullptr) return nullptr;
  auto* block = new Block{static_cast<char*>(memory), segment_size, stream, small_pool, pool};
  segments_.insert(block);
  stats_.reserved += segment_size;
  stats_.peak_reserved = std::max(stats_.peak_reserved, stats_.reserved);
  stats_.system_allocations += 1;
  return block;
}

void* CachingAllocator::allocate(size_t bytes, Stream stream) {
  std::lock_guard lock(mutex_);
  const size_t size = round_size(bytes);
  const bool small_pool = size <= kSmallRequest;
  const PoolId pool = active_pool_ != 0 && active_thread_ == std::this_thread::get_id() ? active_pool_ : 0;
  Block* block = find_free(size, stream, small_pool, pool);
  if (block == nullptr) block = new_segment(size, stream, small_pool, pool);
  if (block == nullptr)
    BRAID_FAIL("out of memory on ", device_.to_string(), ": cannot allocate ", format_bytes(bytes),
               "\n", report_locked());

  // Split off the tail when what remains is worth keeping: any remainder in the small pool, more
  // than a small request in the large pool (smaller tails would only fragment big segments).
  const size_t remainder = block->size - size;
  if ((small_pool && remainder >= kRound) || (!small_pool && remainder > kSmallRequest)) {
    auto* tail = new Block{block->pointer + size, remainder, stream, small_pool, pool};
    tail->previous = block;
    tail->next = block->next;
    if (block->next) block->next->previous = tail;
    block->next = tail;
    block->size = size;
    free_blocks_.insert(tail);
  }
  block->free = false;
  live_blocks_[block->pointer] = block;
  stats_.allocated += block->size;
  stats_.peak_allocated = std::max(stats_.peak_allocated, stats_.allocated);
  stats_.allocations += 1;
  return block->pointer;
}

void CachingAllocator::deallocate(void* pointer) {
  if (pointer == nullptr) return;
  std::lock_guard lock(mutex_);
  auto found = live_blocks_.find(static_cast<char*>(pointer));
  BRAID_CHECK(found != live_blocks_.end(), device_.to_string(), " allocator: free of an unknown pointer");
  Block* block = found->second;
  live_blocks_.erase(found);
  stats_.allocated -= block->size;
  stats_.frees += 1;
  block->free = true;

  // Merge with free neighbours: the merged block keeps the lower address.
  if (Block* next = block->next; next && next->free) {
    free_blocks_.erase(next);
    block->size += next->size;
    block->next = next->next;
    if (next->next) next->next->previous = block;
    delete next;
  }
  if (Block* previous = block->previous; previous && previous->free) {
    free_blocks_.erase(previous);
    previous->size += block->size;
    previous->next = block->next;
    if (block->next) block->next->previous = previous;
    delete block;
    block = previous;
  }
  free_blocks_.insert(block);
}

void CachingAllocator::release_cached() {
  std::lock_guard lock(mutex_);
  release_cached_locked();
}

PoolId CachingAllocator::create_private_pool() {
  std::lock_guard lock(mutex_);
  return next_pool_++;
}

void CachingAllocator::begin_private_pool(PoolId pool) {
  std::lock_guard lock(mutex_);
  BRAID_CHECK(pool != 0 && pool < next_pool_, device_.to_string(), " allocator: ", pool, " is not a private pool");
  BRAID_CHECK(active_pool_ == 0, device_.to_string(), " allocator: private pool ", active_pool_,
              " is still active; pools do not nest");
  active_pool_ = pool;
  active_thread_ = std::this_thread::get_id();
}

void CachingAllocator::end_private_pool() {
  std::lock_guard lock(mutex_);
  active_pool_ = 0;
}

void CachingAllocator::release_private_pool(PoolId pool) {
  std::lock_guard lock(mutex_);
  BRAID_CHECK(pool != 0 && pool != active_pool_, device_.to_string(), " allocator: cannot release pool ", pool,
              pool == 0 ? " (the shared pool)" : " while it is active");
  for (Block* head : segments_) {
    if (head->pool != pool) continue;
    for (Block* block = head; block != nullptr; block = block->next) {
      // The pool is part of the free set's order: take a free block out before retagging it.
      const bool listed = block->free && free_blocks_.erase(block) == 1;
      block->pool = 0;
      if (listed) free_blocks_.insert(block);
    }
  }
}

void CachingAllocator::release_cached_locked() {
  for (auto it = segments_.begin(); it != segments_.end();) {
    Block* head = *it;
    // A private pool's segments stay: a graph that can still replay writes into them.
    if (head->pool == 0 && head->free && head->next == nullptr) {
      free_blocks_.erase(head);
      stats_.reserved -= head->size;
      system_->release(head->pointer);
      delete head;
      it = segments_.erase(it);
    } else {
      ++it;
    }
  }
}

AllocatorStats CachingAllocator::stats() const {
  std::lock_guard lock(mutex_);
  return stats_;
}

void CachingAllocator::reset_peaks() {
  std::lock_guard lock(mutex_);
  stats_.peak_allocated = stats_.allocated;
  stats_.peak_reserved = stats_.reserved;
}

std::string CachingAllocator::report() const {
  std::lock_guard lock(mutex_);
  return report_locked();
}

std::string CachingAllocator::report_locked() const {
  size_t small_free = 0, large_free = 0, largest_free = 0;
  for (const Block* block : free_blocks_) {
    (block->small_pool ? small_free : large_free) += block->size;
    largest_free = std::max(largest_free, block->size);
  }
  return str(device_.to_string(), " caching allocator: ", format_bytes(stats_.allocated),
             " allocated in ", live_blocks_.size(), " blocks (peak ",
             format_bytes(stats_.peak_allocated), "); ", format_bytes(stats_.reserved),
             " reserved in ", segments_.size(), " segments (peak ", format_bytes(stats_.peak_reserved),
             "); cached free: ", format_bytes(small_free), " small, ", format_bytes(large_free),
             " large, largest ", format_bytes(largest_free), "; ", stats_.allocations,
             " allocations, ", stats_.frees, " frees, ", stats_.system_allocations,
             " system allocations; device: ", system_->describe());
}

}  // namespace braid
