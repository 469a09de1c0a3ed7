#include "runtime/rng.h"

#include "runtime/random_transform.h"

namespace braid {

#ifdef BRAID_CUDA
void cuda_fill_random(Tensor& tensor, uint64_t seed, uint64_t offset, bool normal, double a, double b);
#endif

namespace {

template <typename T, typename Sample>
void host_fill_random(Tensor& tensor, Sample sample) {
  T* values = tensor.data<T>();
  const int64_t count = tensor.numel();
#pragma omp parallel for schedule(static) if (count > 65536)
  for (int64_t i = 0; i < count; ++i) values[i] = T(sample(uint64_t(i)));
}

void fill_random(Tensor& tensor, uint64_t seed, uint64_t offset, bool normal, double a, double b) {
  BRAID_CHECK(tensor.is_contiguous(), "random fill of a non-contiguous tensor ", tensor.describe());
  BRAID_CHECK(is_floating(tensor.dtype()), "random fill of a ", dtype_name(tensor.dtype()), " tensor");
  if (tensor.device().is_cuda()) {
#ifdef BRAID_CUDA
    cuda_fill_random(tensor, seed, offset, normal, a, b);
#endif
    return;
  }
  auto sample = [&](uint64_t i) {
    return normal ? philox::normal_at(seed, offset + i, a, b) : philox::uniform_at(seed, offset + i, a, b);
  };
  switch (tensor.dtype()) {
    case DType::f32: host_fill_random<float>(tensor, sample); break;
    case DType::f64: host_fill_random<double>(tensor, sample); break;
    case DType::bf16:
      host_fill_random<bf16>(tensor, [&](uint64_t i) { return float(sample(i)); });
      break;
    default: break;
  }
}

}  // namespace

void fill_uniform(Tensor& tensor, uint64_t seed, uint64_t offset, double low, double high) {
  fill_random(tensor, seed, offset, false, low, high);
}

void fill_normal(Tensor& tensor, uint64_t seed, uint64_t offset, double mean, double stddev) {
  fill_random(tensor, seed, offset, true, mean, stddev);
}

uint64_t Generator::take(uint64_t count) {
  const uint64_t first = offset_;
  offset_ += (count + 3) / 4 * 4;
  return first;
}

void Generator::uniform(Tensor& tensor, double low, double high) {
  fill_uniform(tensor, seed_, take(uint64_t(tensor.numel())), low, high);
}

void Generator::normal(Tensor& tensor, double mean, double stddev) {
  fill_normal(tensor, seed_, take(uint64_t(tensor.numel())), mean, stddev);
}

}  // namespace braid
