#include "runtime/device_copy.h"

#include <cstring>

#include "runtime/error.h"

namespace braid {

namespace {

// Host conversions go through long double (64-bit mantissa on x86) so i64 and u32 survive exactly.
long double load(const void* base, DType dtype, int64_t index) {
  switch (dtype) {
    case DType::f32: return static_cast<const float*>(base)[index];
    case DType::f64: return static_cast<const double*>(base)[index];
    case DType::bf16: return float(static_cast<const bf16*>(base)[index]);
    case DType::i32: return static_cast<const int32_t*>(base)[index];
    case DType::i64: return static_cast<const int64_t*>(base)[index];
    case DType::u16: return static_cast<const uint16_t*>(base)[index];
    case DType::u32: return static_cast<const uint32_t*>(base)[index];
  }
  return 0;
}

void store(void* base, DType dtype, int64_t index, long double value) {
  switch (dtype) {
    case DType::f32: static_cast<float*>(base)[index] = float(value); return;
    case DType::f64: static_cast<double*>(base)[index] = double(value); return;
    case DType::bf16: static_cast<bf16*>(base)[index] = bf16(float(value)); return;
    case DType::i32: static_cast<int32_t*>(base)[index] = int32_t(value); return;
    case DType::i64: static_cast<int64_t*>(base)[index] = int64_t(value); return;
    case DType::u16: static_cast<uint16_t*>(base)[index] = uint16_t(value); return;
    case DType::u32: static_cast<uint32_t*>(base)[index] = uint32_t(value); return;
  }
}

bool is_dense(const StridedView& view, const CopyShape& shape) {
  int64_t expected = 1;
  for (int d = shape.dims - 1; d >= 0; --d) {
    if (shape.sizes[d] != 1 && view.strides[d] != expected) return false;
    expected *= shape.sizes[d];
  }
  return true;
}

// Offset (in elements) of the element with row-major linear index `linear`.
int64_t offset_of(const StridedView& view, const CopyShape& shape, int64_t linear) {
  int64_t offset = 0;
  for (int d = shape.dims - 1; d >= 0; --d) {
    offset += (linear % shape.sizes[d]) * view.strides[d];
    linear /= shape.sizes[d];
  }
  return offset;
}

}  // namespace

void host_copy(const StridedView& dst, const StridedView& src, const CopyShape& shape) {
  if (dst.dtype == src.dtype && is_dense(dst, shape) && is_dense(src, shape)) {
    std::memcpy(dst.data, src.data, size_t(shape.numel) * dtype_size(dst.dtype));
    return;
  }
#pragma omp parallel for schedule(static) if (shape.numel > 65536)
  for (int64_t i = 0; i < shape.numel; ++i)
    store(dst.data, dst.dtype, offset_of(dst, shape, i), load(src.data, src.dtype, offset_of(src, shape, i)));
}

void host_fill(const StridedView& dst, const CopyShape& shape, double value) {
#pragma omp parallel for schedule(static) if (shape.numel > 65536)
  for (int64_t i = 0; i < shape.numel; ++i) store(dst.data, dst.dtype, offset_of(dst, shape, i), value);
}

}  // namespace braid
