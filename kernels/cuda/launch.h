// How kernels are launched: the SM count grids are sized by, and programmatic dependent launch.
//
// Programmatic dependent launch (sm_90): a kernel launched with launch_dependent() may start while
// the kernel before it in the stream is still running, as soon as that kernel's CTAs have all called
// allow_dependent_launch() (or exited). Until it calls wait_for_prior_grids() it must neither read
// what earlier kernels write nor write anything they read; the wait returns once the kernel before
// it has completed and its writes are visible. The work it may do before the wait (set-up, loading
// weights that no kernel writes) overlaps the previous kernel's tail. allow_dependent_launch() is
// harmless in a kernel whose successor is launched the ordinary way, and wait_for_prior_grids()
// returns at once in a kernel that was.
#pragma once

#include <cuda_runtime.h>

#include <utility>

#include "runtime/cuda_check.h"

namespace braid::kernels::cuda {

__device__ __forceinline__ void allow_dependent_launch() {
  asm volatile("griddepcontrol.launch_dependents;\n" ::: "memory");
}
__device__ __forceinline__ void wait_for_prior_grids() { asm volatile("griddepcontrol.wait;\n" ::: "memory"); }
// The first statement of a kernel that has nothing to do before the kernel ahead has finished: its
// own launch latency hides under that kernel, and it lets the kernel after it launch early too.
__device__ __forceinline__ void start_after_prior_grids() {
  allow_dependent_launch();
  wait_for_prior_grids();
}

// Streaming multiprocessors of the current device (queried once per device).
int sm_count();

// kernel<<<grid, block, shared_bytes, stream>>>(args...) as a programmatic dependent launch (above).
template <typename... Params, typename... Args>
void launch_dependent(void (*kernel)(Params...), dim3 grid, dim3 block, size_t shared_bytes, cudaStream_t stream,
                      Args&&... args) {
  cudaLaunchAttribute attribute{};
  attribute.id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attribute.val.programmaticStreamSerializationAllowed = 1;
  cudaLaunchConfig_t config{};
  config.gridDim = grid;
  config.blockDim = block;
  config.dynamicSmemBytes = shared_bytes;
  config.stream = stream;
  config.attrs = &attribute;
  config.numAttrs = 1;
  CUDA_CHECK(cudaLaunchKernelEx(&config, kernel, std::forward<Args>(args)...));
}

}  // namespace braid::kernels::cuda
