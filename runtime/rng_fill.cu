// Device side of runtime/rng.h: the same transforms as the host fill, one thread an element.
#include <type_traits>

#include "runtime/cuda_check.h"
#include "runtime/random_transform.h"
#include "runtime/tensor.h"

namespace braid {

namespace {

template <typename T>
__global__ void fill_random_kernel(T* values, int64_t count, uint64_t seed, uint64_t offset,
                                   bool normal, double a, double b) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < count;
       i += int64_t(gridDim.x) * blockDim.x) {
    double value = normal ? philox::normal_at(seed, offset + uint64_t(i), a, b)
                          : philox::uniform_at(seed, offset + uint64_t(i), a, b);
    if constexpr (std::is_same_v<T, double>) values[i] = value;
    else values[i] = T(float(value));
  }
}

template <typename T>
void launch(Tensor& tensor, uint64_t seed, uint64_t offset, bool normal, double a, double b) {
  const int64_t count = tensor.numel();
  const unsigned blocks = unsigned(std::min<int64_t>((count + 255) / 256, 65535));
  fill_random_kernel<T><<<blocks > 0 ? blocks : 1, 256>>>(tensor.data<T>(), count, seed, offset, normal, a, b);
  CUDA_CHECK_LAST_LAUNCH();
}

}  // namespace

void cuda_fill_random(Tensor& tensor, uint64_t seed, uint64_t offset, bool normal, double a, double b) {
  CUDA_CHECK(cudaSetDevice(tensor.device().index));
  switch (tensor.dtype()) {
    case DType::f32: launch<float>(tensor, seed, offset, normal, a, b); break;
    case DType::f64: launch<double>(tensor, seed, offset, normal, a, b); break;
    case DType::bf16: launch<bf16>(tensor, seed, offset, normal, a, b); break;
    default: BRAID_FAIL("random fill of a ", dtype_name(tensor.dtype()), " tensor");
  }
}

}  // namespace braid
