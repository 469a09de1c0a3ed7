// Device side of runtime/device_copy.h: strided copy-and-convert and fill, ordered on the compute
// stream like every kernel (no host synchronisation: the next kernel or cudaMemcpy waits for them),
// so a CUDA graph captures them with the kernels around them.
//
// Copies are the glue of views (contiguous(), casts, narrow()ed projections), so they run at memory
// speed: adjacent dimensions that are contiguous in both views are merged first (a narrow()ed
// column block becomes rows of one contiguous run, a whole tensor becomes one run), contiguous
// same-dtype copies go to cudaMemcpyAsync, rows with aligned unit-stride runs move as 16-byte
// vectors, and the element loop otherwise is typed (copy by element size, or f32 <-> bf16) with
// 32-bit index arithmetic when the tensor allows it. Other conversions (rare:
// integer <-> float in tests and data handling) take a generic path through double.
#include <algorithm>
#include <type_traits>

#include "runtime/cuda_check.h"
#include "runtime/cuda_stream.h"
#include "runtime/device_copy.h"

namespace braid {

namespace {

// A copy's iteration space after merging dimensions, innermost last.
struct Layout {
  int dims;
  int64_t sizes[kMaxDims];
  int64_t dst_strides[kMaxDims];
  int64_t src_strides[kMaxDims];
  int64_t numel;
};

// Drops size-1 dimensions and merges a dimension into the next inner one when both views step
// over it as one run (outer stride = inner size x inner stride in each view).
Layout collapse(const StridedView& dst, const StridedView* src, const CopyShape& shape) {
  Layout layout{0, {}, {}, {}, shape.numel};
  for (int d = shape.dims - 1; d >= 0; --d) {
    const int64_t size = shape.sizes[d];
    if (size == 1) continue;
    const int64_t dst_stride = dst.strides[d], src_stride = src ? src->strides[d] : 0;
    if (layout.dims > 0) {
      const int inner = layout.dims - 1;
      const bool dst_runs_on = dst_stride == layout.sizes[inner] * layout.dst_strides[inner];
      const bool src_runs_on = !src || src_stride == layout.sizes[inner] * layout.src_strides[inner];
      if (dst_runs_on && src_runs_on) {
        layout.sizes[inner] *= size;
        continue;
      }
    }
    layout.sizes[layout.dims] = size;
    layout.dst_strides[layout.dims] = dst_stride;
    layout.src_strides[layout.dims] = src_stride;
    ++layout.dims;
  }
  // Built inner to outer; the kernels walk outer to inner.
  std::reverse(layout.sizes, layout.sizes + layout.dims);
  std::reverse(layout.dst_strides, layout.dst_strides + layout.dims);
  std::reverse(layout.src_strides, layout.src_strides + layout.dims);
  if (layout.dims == 0) {  // a single element
    layout.dims = 1;
    layout.sizes[0] = 1;
    layout.dst_strides[0] = layout.src_strides[0] = 1;
  }
  return layout;
}

bool is_one_run(const Layout& layout, bool with_source) {
  return layout.dims == 1 && layout.dst_strides[0] == 1 && (!with_source || layout.src_strides[0] == 1);
}

template <typename Index>
__device__ void offsets_of(const Layout& layout, Index linear, int64_t& dst_offset, int64_t& src_offset) {
  dst_offset = src_offset = 0;
  for (int d = layout.dims - 1; d >= 0; --d) {
    const Index size = Index(layout.sizes[d]);
    const Index coordinate = linear % size;
    linear /= size;
    dst_offset += int64_t(coordinate) * layout.dst_strides[d];
    src_offset += int64_t(coordinate) * layout.src_strides[d];
  }
}

template <typename To, typename From>
__device__ To convert(From value) {
  if constexpr (std::is_same_v<To, From>) return value;
  else return To(float(value));  // f32 <-> bf16
}

// A value of V elements moved as one aligned vector access.
template <typename T, int V>
struct alignas(sizeof(T) * V) Vector {
  T values[V];
};

// Rows of `vectors` V-element vectors, contiguous within each row (the common case after merging:
// one run, or a narrow()ed block of columns); blockIdx.y walks rows, x the vectors of a row.
template <int V, typename To, typename From>
__global__ void rows_copy_kernel(To* dst, int64_t dst_row_stride, const From* src, int64_t src_row_stride,
                                 int64_t rows, int64_t vectors) {
  for (int64_t r = blockIdx.y; r < rows; r += gridDim.y) {
    const auto* in = reinterpret_cast<const Vector<From, V>*>(src + r * src_row_stride);
    auto* out = reinterpret_cast<Vector<To, V>*>(dst + r * dst_row_stride);
    for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < vectors; i += int64_t(gridDim.x) * blockDim.x) {
      const Vector<From, V> loaded = in[i];
      Vector<To, V> converted;
#pragma unroll
      for (int k = 0; k < V; ++k) converted.values[k] = convert<To>(loaded.values[k]);
      out[i] = converted;
    }
  }
}

template <typename Index, typename To, typename From>
__global__ void typed_copy_kernel(To* dst, const From* src, Layout layout) {
  for (Index i = Index(blockIdx.x) * blockDim.x + threadIdx.x; i < Index(layout.numel);
       i += Index(gridDim.x) * blockDim.x) {
    int64_t dst_offset, src_offset;
    offsets_of<Index>(layout, i, dst_offset, src_offset);
    dst[dst_offset] = convert<To>(src[src_offset]);
  }
}

// Any pair of dtypes, through double: exact for every dtype except i64 beyond 2^53.
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

__global__ void converting_copy_kernel(void* dst, DType dst_dtype, const void* src, DType src_dtype, Layout layout) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < layout.numel;
       i += int64_t(gridDim.x) * blockDim.x) {
    int64_t dst_offset, src_offset;
    offsets_of<int64_t>(layout, i, dst_offset, src_offset);
    store(dst, dst_dtype, dst_offset, load(src, src_dtype, src_offset));
  }
}

__global__ void fill_kernel(void* dst, DType dtype, Layout layout, double value) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < layout.numel;
       i += int64_t(gridDim.x) * blockDim.x) {
    int64_t dst_offset, unused;
    offsets_of<int64_t>(layout, i, dst_offset, unused);
    store(dst, dtype, dst_offset, value);
  }
}

constexpr int kThreads = 256;

unsigned grid_for(int64_t numel) {
  const int64_t blocks = (numel + kThreads - 1) / kThreads;
  return unsigned(std::clamp<int64_t>(blocks, 1, 65535));
}

template <typename To, typename From>
void launch_typed(void* dst, const void* src, const Layout& layout) {
  // Vector path: at most two dimensions, unit inner strides, and every row start and length a
  // whole number of 16-byte (source or destination, the wider) vectors.
  constexpr int V = 16 / int(sizeof(To) > sizeof(From) ? sizeof(To) : sizeof(From));
  const int inner = layout.dims - 1;
  const int64_t rows = layout.dims == 2 ? layout.sizes[0] : 1, columns = layout.sizes[inner];
  const int64_t dst_row_stride = layout.dims == 2 ? layout.dst_strides[0] : 0;
  const int64_t src_row_stride = layout.dims == 2 ? layout.src_strides[0] : 0;
  const bool vectorizable = layout.dims <= 2 && layout.dst_strides[inner] == 1 && layout.src_strides[inner] == 1 &&
                            columns % V == 0 && dst_row_stride % V == 0 && src_row_stride % V == 0 &&
                            reinterpret_cast<uintptr_t>(dst) % (sizeof(To) * V) == 0 &&
                            reinterpret_cast<uintptr_t>(src) % (sizeof(From) * V) == 0;
  if (vectorizable) {
    const int64_t vectors = columns / V;
    const dim3 grid(unsigned(std::clamp<int64_t>((vectors + kThreads - 1) / kThreads, 1, 65535)),
                    unsigned(std::min<int64_t>(rows, 65535)));
    rows_copy_kernel<V><<<grid, kThreads, 0, compute_stream()>>>(static_cast<To*>(dst), dst_row_stride, static_cast<const From*>(src),
                                             src_row_stride, rows, vectors);
    CUDA_CHECK_LAST_LAUNCH();
    return;
  }
  if (layout.numel <= int64_t(UINT32_MAX) - int64_t(65535) * kThreads)
    typed_copy_kernel<uint32_t><<<grid_for(layout.numel), kThreads, 0, compute_stream()>>>(static_cast<To*>(dst), static_cast<const From*>(src), layout);
  else
    typed_copy_kernel<uint64_t><<<grid_for(layout.numel), kThreads, 0, compute_stream()>>>(static_cast<To*>(dst), static_cast<const From*>(src), layout);
  CUDA_CHECK_LAST_LAUNCH();
}

}  // namespace

void cuda_copy(const StridedView& dst, const StridedView& src, const CopyShape& shape) {
  const Layout layout = collapse(dst, &src, shape);
  if (dst.dtype == src.dtype) {
    const size_t element = dtype_size(dst.dtype);
    if (is_one_run(layout, true)) {
      CUDA_CHECK(cudaMemcpyAsync(dst.data, src.data, size_t(layout.numel) * element, cudaMemcpyDeviceToDevice, compute_stream()));
      return;
    }
    switch (element) {  // the bits move unchanged, so only the element size matters
      case 2: launch_typed<uint16_t, uint16_t>(dst.data, src.data, layout); return;
      case 4: launch_typed<uint32_t, uint32_t>(dst.data, src.data, layout); return;
      case 8: launch_typed<uint64_t, uint64_t>(dst.data, src.data, layout); return;
    }
  }
  if (dst.dtype == DType::bf16 && src.dtype == DType::f32) return launch_typed<bf16, float>(dst.data, src.data, layout);
  if (dst.dtype == DType::f32 && src.dtype == DType::bf16) return launch_typed<float, bf16>(dst.data, src.data, layout);
  converting_copy_kernel<<<grid_for(layout.numel), kThreads, 0, compute_stream()>>>(dst.data, dst.dtype, src.data, src.dtype, layout);
  CUDA_CHECK_LAST_LAUNCH();
}

void cuda_fill(const StridedView& dst, const CopyShape& shape, double value) {
  const Layout layout = collapse(dst, nullptr, shape);
  if (value == 0 && is_one_run(layout, false)) {  // +0.0 is all-zero bits in every dtype
    CUDA_CHECK(cudaMemsetAsync(dst.data, 0, size_t(layout.numel) * dtype_size(dst.dtype), compute_stream()));
    return;
  }
  fill_kernel<<<grid_for(layout.numel), kThreads, 0, compute_stream()>>>(dst.data, dst.dtype, layout, value);
  CUDA_CHECK_LAST_LAUNCH();
}

void cuda_copy_bytes(void* dst, const void* src, size_t bytes) {
  CUDA_CHECK(cudaMemcpy(dst, src, bytes, cudaMemcpyDefault));
}

void cuda_fill_bytes(void* dst, int byte, size_t bytes) { CUDA_CHECK(cudaMemsetAsync(dst, byte, bytes, compute_stream())); }

void cuda_set_device(int index) { CUDA_CHECK(cudaSetDevice(index)); }

}  // namespace braid
