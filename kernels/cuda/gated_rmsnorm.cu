// Gated RMSNorm entry points. The kernels are rmsnorm.cu's segment-norm engine in its `gated_rms`
// mode (segments = (row, group) pairs); this file maps the gated-norm contract onto it.
#include "kernels/cuda/gated_rmsnorm.h"

#include "kernels/cuda/rmsnorm.h"

namespace braid::kernels::cuda {

void gated_rmsnorm_forward(const void* y, const void* z, const float* weight, void* out,
                           float* rstd, int64_t rows, int64_t groups, int64_t group_size,
                           float eps, DType dtype, cudaStream_t stream, int64_t z_row_stride) {
  segment_norm_forward(SegmentNorm::gated_rms, y, z, weight, nullptr, nullptr, out, nullptr, rstd,
                       rows, groups, group_size, eps, dtype, stream, z_row_stride);
}

size_t gated_rmsnorm_workspace_floats(int64_t rows, int64_t groups, int64_t group_size,
                                      DType dtype) {
  return segment_norm_workspace_floats(SegmentNorm::gated_rms, rows, groups, group_size, dtype);
}

void gated_rmsnorm_backward(const void* y, const void* z, const float* weight, const float* rstd,
                            const void* d_out, void* d_y, void* d_z, float* d_weight,
                            int64_t rows, int64_t groups, int64_t group_size, DType dtype,
                            float* workspace, cudaStream_t stream) {
  segment_norm_backward(SegmentNorm::gated_rms, y, z, weight, nullptr, rstd, d_out, nullptr, d_y,
                        d_z, d_weight, nullptr, rows, groups, group_size, dtype, workspace, stream);
}

}  // namespace braid::kernels::cuda
