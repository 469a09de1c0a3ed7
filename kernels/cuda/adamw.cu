#include "kernels/cuda/adamw.h"

#include <cmath>

#include "kernels/cuda/common.cuh"

namespace braid::kernels::cuda {

namespace {

constexpr int kAdamwThreads = 256;

// One element's update, in the CPU twin's order of operations.
__device__ __forceinline__ void adamw_element(float& p, float grad, float& m, float& v, float decay,
                                              const AdamwScalars& s) {
  const float g = grad * s.grad_scale;
  m = s.beta1 * m + s.one_minus_beta1 * g;
  v = s.beta2 * v + s.one_minus_beta2 * g * g;
  p = p * decay - s.step_size * m / (sqrtf(v * s.v_correction) + s.eps);
}

__global__ void __launch_bounds__(kAdamwThreads)
    adamw_kernel(const AdamwTensor* tensors, const AdamwChunk* chunks, AdamwScalars s) {
  // Stage 0: which tensor and which chunk of it this block owns.
  const AdamwChunk chunk = chunks[blockIdx.x];
  const AdamwTensor t = tensors[chunk.tensor];
  const int64_t begin = int64_t(chunk.chunk) * kAdamwChunkElements;
  const int64_t count = min(t.numel - begin, kAdamwChunkElements);
  if (count <= 0) return;
  const float decay = t.decay ? s.decay : 1.0f;
  float* param = t.param + begin;
  const float* grad = t.grad + begin;
  float* m = t.m + begin;
  float* v = t.v + begin;
  // begin is a multiple of 4 elements, so the chunk is aligned when the tensor's arrays are.
  const bool aligned = ((reinterpret_cast<uintptr_t>(t.param) | reinterpret_cast<uintptr_t>(t.grad) |
                         reinterpret_cast<uintptr_t>(t.m) | reinterpret_cast<uintptr_t>(t.v)) &
                        15) == 0;
  int64_t scalar_from = 0;
  if (aligned) {
    // Stage 1: float4 body.
    const int64_t vectors = count / 4;
    for (int64_t i = threadIdx.x; i < vectors; i += blockDim.x) {
      float4 p4 = reinterpret_cast<float4*>(param)[i];
      const float4 g4 = reinterpret_cast<const float4*>(grad)[i];
      float4 m4 = reinterpret_cast<float4*>(m)[i];
      float4 v4 = reinterpret_cast<float4*>(v)[i];
      adamw_element(p4.x, g4.x, m4.x, v4.x, decay, s);
      adamw_element(p4.y, g4.y, m4.y, v4.y, decay, s);
      adamw_element(p4.z, g4.z, m4.z, v4.z, decay, s);
      adamw_element(p4.w, g4.w, m4.w, v4.w, decay, s);
      reinterpret_cast<float4*>(param)[i] = p4;
      reinterpret_cast<float4*>(m)[i] = m4;
      reinterpret_cast<float4*>(v)[i] = v4;
    }
    scalar_from = vectors * 4;
  }
  // Stage 2: the scalar tail (or the whole chunk when some array is misaligned).
  for (int64_t i = scalar_from + threadIdx.x; i < count; i += blockDim.x) {
    float p = param[i], mi = m[i], vi = v[i];
    adamw_element(p, grad[i], mi, vi, decay, s);
    param[i] = p;
    m[i] = mi;
    v[i] = vi;
  }
}

}  // namespace

AdamwScalars adamw_scalars(double lr, double beta1, double beta2, double eps,
                           double weight_decay, int64_t step, double grad_scale) {
  BRAID_CHECK(step >= 1, "adamw_step: step counts from 1, got ", step);
  BRAID_CHECK(beta1 >= 0 && beta1 < 1 && beta2 >= 0 && beta2 < 1,
              "adamw_step: betas must lie in [0, 1), got beta1 = ", beta1, ", beta2 = ", beta2);
  AdamwScalars s;
  // Formed in double and rounded once, exactly as kernels/cpu/adamw.cpp does for T = float.
  s.decay = float(1 - lr * weight_decay);
  s.step_size = float(lr / (1 - std::pow(beta1, double(step))));
  s.v_correction = float(1 / (1 - std::pow(beta2, double(step))));
  s.beta1 = float(beta1);
  s.beta2 = float(beta2);
  s.one_minus_beta1 = float(1 - beta1);
  s.one_minus_beta2 = float(1 - beta2);
  s.eps = float(eps);
  s.grad_scale = float(grad_scale);
  return s;
}

void adamw_step(const AdamwTensor* tensors, const AdamwChunk* chunks, int64_t num_chunks,
                const AdamwScalars& scalars, cudaStream_t stream) {
  BRAID_CHECK(num_chunks >= 0 && num_chunks <= int64_t(0x7fffffff), "cuda adamw_step: ", num_chunks,
              " chunks");
  if (num_chunks == 0) return;
  adamw_kernel<<<unsigned(num_chunks), kAdamwThreads, 0, stream>>>(tensors, chunks, scalars);
  CUDA_CHECK_LAST_LAUNCH();
}

}  // namespace braid::kernels::cuda
