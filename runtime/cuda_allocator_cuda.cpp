// The CUDA caching allocator of each device: CachingAllocator over cudaMalloc/cudaFree.
#include <memory>
#include <mutex>
#include <vector>

#include "runtime/caching_allocator.h"
#include "runtime/cuda_check.h"

namespace braid {

namespace {

class CudaMemory final : public SystemMemory {
 public:
  explicit CudaMemory(int index) : index_(index) {}

  void* reserve(size_t bytes) override {
    CUDA_CHECK(cudaSetDevice(index_));
    void* pointer = nullptr;
    cudaError_t status = cudaMalloc(&pointer, bytes);
    if (status == cudaErrorMemoryAllocation) {
      cudaGetLastError();  // clear it: out-of-memory is reported by the caller, with the report
      return nullptr;
    }
    CUDA_CHECK(status);
    return pointer;
  }

  void release(void* pointer) override {
    CUDA_CHECK(cudaSetDevice(index_));
    CUDA_CHECK(cudaFree(pointer));
  }

  std::string describe() const override {
    cudaDeviceProp properties{};
    size_t free_bytes = 0, total_bytes = 0;
    if (cudaGetDeviceProperties(&properties, index_) != cudaSuccess ||
        cudaSetDevice(index_) != cudaSuccess || cudaMemGetInfo(&free_bytes, &total_bytes) != cudaSuccess) {
      cudaGetLastError();
      return str("cuda:", index_, " (properties unavailable)");
    }
    return str("cuda:", index_, " (", properties.name, ", ", format_bytes(total_bytes), " total, ",
               format_bytes(free_bytes), " free)");
  }

 private:
  int index_;
};

}  // namespace

Allocator& cuda_allocator(int index) {
  static std::mutex mutex;
  // Never destroyed: tensors in static storage may outlive any destruction order we could pick.
  static auto* allocators = new std::vector<std::unique_ptr<CachingAllocator>>();
  std::lock_guard lock(mutex);
  const int count = cuda_device_count();
  BRAID_CHECK(index >= 0 && index < count, "cuda:", index, " requested, but ", count,
              " CUDA device(s) are present");
  if (allocators->empty()) allocators->resize(size_t(count));
  auto& slot = (*allocators)[size_t(index)];
  if (!slot) slot = std::make_unique<CachingAllocator>(Device::cuda(index), std::make_unique<CudaMemory>(index));
  return *slot;
}

}  // namespace braid
