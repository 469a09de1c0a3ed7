// GroupNorm entry points. The kernels are rmsnorm.cu's segment-norm engine in its `group` mode
// (segments = (row, group) pairs); this file maps the GroupNorm contract onto it.
#include "kernels/cuda/group_norm.h"

#include "kernels/cuda/rmsnorm.h"

namespace braid::kernels::cuda {

void group_norm_forward(const void* x, const float* weight, const float* bias, void* out,
                        float* mean, float* rstd, int64_t rows, int64_t groups,
                        int64_t group_size, float eps, DType dtype, cudaStream_t stream) {
  segment_norm_forward(SegmentNorm::group, x, nullptr, weight, bias, nullptr, out, mean, rstd, rows,
                       groups, group_size, eps, dtype, stream);
}

size_t group_norm_workspace_floats(int64_t rows, int64_t groups, int64_t group_size, DType dtype) {
  return segment_norm_workspace_floats(SegmentNorm::group, rows, groups, group_size, dtype);
}

void group_norm_backward(const void* x, const float* weight, const float* mean, const float* rstd,
                         const void* d_out, void* d_x, float* d_weight, float* d_bias,
                         int64_t rows, int64_t groups, int64_t group_size, DType dtype,
                         float* workspace, cudaStream_t stream) {
  segment_norm_backward(SegmentNorm::group, x, nullptr, weight, mean, rstd, d_out, nullptr, d_x,
                        nullptr, d_weight, d_bias, rows, groups, group_size, dtype, workspace,
                        stream);
}

}  // namespace braid::kernels::cuda
