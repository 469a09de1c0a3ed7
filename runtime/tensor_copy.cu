// Device side of runtime/device_copy.h: one strided copy-and-convert kernel and a fill kernel.
#include "runtime/cuda_check.h"
#include "runtime/device_copy.h"

namespace braid {

namespace {

// Device conversions go through double: exact for every dtype except i64 beyond 2^53.
__device__ double load(const void* base, DType dtype, int64_t index) {
  switch (dtype) {
    case DType::f32: return static_cast<const float*>(base)[index];
    case DType::f64: return static_cast<const double*>(base)[index];
    case DType::bf16: return float(static_cast<const bf16*>(base)[index]);
    case DType::i32: return static_cast<const int32_t*>(base)[index];
    case DType::i64: return double(static_cast<const int64_t*>(base)[index]);
    case DType::u16: return static_cast<const uint16_t*>(base)[index];
    case DType::u32: return static_cast<const uint32_t*>(base)[index];
  }
  return 0;
}

__device__ void store(void* base, DType dtype, int64_t index, double value) {
  switch (dtype) {
    case DType::f32: static_cast<float*>(base)[index] = float(value); return;
    case DType::f64: static_cast<double*>(base)[index] = value; return;
    case DType::bf16: static_cast<bf16*>(base)[index] = bf16(float(value)); return;
    case DType::i32: static_cast<int32_t*>(base)[index] = int32_t(value); return;
    case DType::i64: static_cast<int64_t*>(base)[index] = int64_t(value); return;
    case DType::u16: static_cast<uint16_t*>(base)[index] = uint16_t(value); return;
    case DType::u32: static_cast<uint32_t*>(base)[index] = uint32_t(value); return;
  }
}

__device__ int64_t offset_of(const StridedView& view, const CopyShape& shape, int64_t linear) {
  int64_t offset = 0;
  for (int d = shape.dims - 1; d >= 0; --d) {
    offset += (linear % shape.sizes[d]) * view.strides[d];
    linear /= shape.sizes[d];
  }
  return offset;
}

__global__ void copy_kernel(StridedView dst, StridedView src, CopyShape shape) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < shape.numel;
       i += int64_t(gridDim.x) * blockDim.x)
    store(dst.data, dst.dtype, offset_of(dst, shape, i), load(src.data, src.dtype, offset_of(src, shape, i)));
}

__global__ void fill_kernel(StridedView dst, CopyShape shape, double value) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < shape.numel;
       i += int64_t(gridDim.x) * blockDim.x)
    store(dst.data, dst.dtype, offset_of(dst, shape, i), value);
}

unsigned grid_for(int64_t numel) {
  int64_t blocks = (numel + 255) / 256;
  return unsigned(blocks < 65535 ? (blocks > 0 ? blocks : 1) : 65535);
}

}  // namespace

void cuda_copy(const StridedView& dst, const StridedView& src, const CopyShape& shape) {
  copy_kernel<<<grid_for(shape.numel), 256>>>(dst, src, shape);
  CUDA_CHECK_LAST_LAUNCH();
  CUDA_CHECK(cudaDeviceSynchronize());
}

void cuda_fill(const StridedView& dst, const CopyShape& shape, double value) {
  fill_kernel<<<grid_for(shape.numel), 256>>>(dst, shape, value);
  CUDA_CHECK_LAST_LAUNCH();
  CUDA_CHECK(cudaDeviceSynchronize());
}

void cuda_copy_bytes(void* dst, const void* src, size_t bytes) {
  CUDA_CHECK(cudaMemcpy(dst, src, bytes, cudaMemcpyDefault));
}

void cuda_fill_bytes(void* dst, int byte, size_t bytes) {
  CUDA_CHECK(cudaMemset(dst, byte, bytes));
  CUDA_CHECK(cudaDeviceSynchronize());
}

void cuda_set_device(int index) { CUDA_CHECK(cudaSetDevice(index)); }

}  // namespace braid
