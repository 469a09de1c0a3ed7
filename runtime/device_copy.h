// Element copies between tensors' memory, with strides and dtype conversion. The host version is
// plain C++; the CUDA version (tensor_copy.cu) runs as a kernel on the device holding both sides.
// Tensor::copy_from composes these with cudaMemcpy for transfers between host and device.
#pragma once

#include <cstdint>

#include "runtime/dtype.h"

namespace braid {

constexpr int kMaxDims = 8;

struct StridedView {
  void* data;
  DType dtype;
  int64_t strides[kMaxDims];  // in elements
};

struct CopyShape {
  int dims;
  int64_t sizes[kMaxDims];
  int64_t numel;
};

void host_copy(const StridedView& dst, const StridedView& src, const CopyShape& shape);
void host_fill(const StridedView& dst, const CopyShape& shape, double value);

#ifdef BRAID_CUDA
// Both views on the current CUDA device; ordered on the compute stream (runtime/cuda_stream.h),
// without host synchronisation.
void cuda_copy(const StridedView& dst, const StridedView& src, const CopyShape& shape);
void cuda_fill(const StridedView& dst, const CopyShape& shape, double value);
void cuda_copy_bytes(void* dst, const void* src, size_t bytes);  // any direction, synchronous
void cuda_fill_bytes(void* dst, int byte, size_t bytes);  // on the current device, stream-ordered
void cuda_set_device(int index);
#endif

}  // namespace braid
