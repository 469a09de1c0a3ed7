// The stream every CUDA kernel of the engine is launched on.
//
// Today all compute runs on the legacy default stream of the current device, which also orders it
// with Tensor's copies and fills (runtime/device_copy.h). Kernels take the stream as an argument and
// ops pass compute_stream(), so moving compute onto its own stream (to overlap gradient all-reduce
// on a communication stream) changes this one place.
#pragma once

#include <cuda_runtime.h>

namespace braid {

inline cudaStream_t compute_stream() { return nullptr; }

}  // namespace braid
