#include "kernels/cuda/launch.h"

#include <map>
#include <mutex>

namespace braid::kernels::cuda {

int sm_count() {
  static std::mutex mutex;
  static std::map<int, int> counts;
  int device = 0;
  CUDA_CHECK(cudaGetDevice(&device));
  std::lock_guard<std::mutex> lock(mutex);
  auto found = counts.find(device);
  if (found != counts.end()) return found->second;
  int count = 0;
  CUDA_CHECK(cudaDeviceGetAttribute(&count, cudaDevAttrMultiProcessorCount, device));
  counts[device] = count;
  return count;
}

}  // namespace braid::kernels::cuda
