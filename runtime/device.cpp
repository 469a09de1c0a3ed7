#include "runtime/device.h"

#include "runtime/error.h"

#ifdef BRAID_CUDA
#include <cuda_runtime.h>
#endif

namespace braid {

Device Device::parse(const std::string& text) {
  if (text == "cpu") return cpu();
  if (text == "cuda") return cuda(0);
  if (text.rfind("cuda:", 0) == 0) {
    const std::string index = text.substr(5);
    BRAID_CHECK(!index.empty() && index.find_first_not_of("0123456789") == std::string::npos,
                "bad device '", text, "': expected cpu, cuda or cuda:N");
    return cuda(std::stoi(index));
  }
  BRAID_FAIL("bad device '", text, "': expected cpu, cuda or cuda:N");
}

std::string Device::to_string() const {
  return is_cpu() ? "cpu" : "cuda:" + std::to_string(index);
}

int cuda_device_count() {
#ifdef BRAID_CUDA
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess) {
    cudaGetLastError();  // clear the sticky "no device" error
    return 0;
  }
  return count;
#else
  return 0;
#endif
}

bool cuda_available() { return cuda_device_count() > 0; }

}  // namespace braid
