// The stream every CUDA kernel of the engine is launched on.
//
// One stream per device, created on first use as a blocking stream: it orders itself with the
// legacy default stream (synchronous cudaMemcpy transfers, which therefore still see every result),
// and unlike the legacy stream it can be captured into a CUDA graph (the inference session captures
// its decode step). Kernels take the stream as an argument and ops pass compute_stream(); Tensor's
// device copies and fills run on it too (runtime/device_copy.h), and the communicator orders its
// own stream with it through events.
#pragma once

#include <cuda_runtime.h>

#include <functional>
#include <mutex>

#include "runtime/allocator.h"
#include "runtime/caching_allocator.h"
#include "runtime/cuda_check.h"

namespace braid {

// The compute stream of the current device.
inline cudaStream_t compute_stream() {
  constexpr int kMaxDevices = 64;
  static std::once_flag created[kMaxDevices];
  static cudaStream_t streams[kMaxDevices];
  int device = 0;
  CUDA_CHECK(cudaGetDevice(&device));
  BRAID_CHECK(device >= 0 && device < kMaxDevices, "CUDA device ", device, " beyond the engine's ", kMaxDevices);
  std::call_once(created[device], [&] { CUDA_CHECK(cudaStreamCreateWithFlags(&streams[device], cudaStreamDefault)); });
  return streams[device];
}

// Whether the current device's compute stream is recording a CUDA graph: an op then must not read
// device values on the host (a synchronous copy would invalidate the capture).
inline bool compute_stream_capturing() {
  cudaStreamCaptureStatus status = cudaStreamCaptureStatusNone;
  CUDA_CHECK(cudaStreamIsCapturing(compute_stream(), &status));
  return status != cudaStreamCaptureStatusNone;
}

// Work issued on the compute stream of the current device, captured once into a CUDA graph and
// replayed. Tensors allocated while recording come from a private pool of the device's caching
// allocator (runtime/caching_allocator.h), so the addresses the graph reads and writes stay its own
// until it is destroyed. Recording must issue only stream-ordered work on compute_stream(): no
// synchronous copies, no host reads of device values.
class CapturedGraph {
 public:
  CapturedGraph() = default;
  CapturedGraph(const CapturedGraph&) = delete;
  CapturedGraph& operator=(const CapturedGraph&) = delete;
  ~CapturedGraph() { reset(); }

  // Records `work` (which does not run). Returns false, with nothing captured and the CUDA state
  // clean, when the work cannot be captured (it raised braid::Error, e.g. for a synchronous copy).
  bool capture(const std::function<void()>& work) {
    BRAID_CHECK(!compute_stream_capturing(), "CapturedGraph: the compute stream is already recording a graph");
    reset();
    CUDA_CHECK(cudaGetDevice(&device_));
    auto& memory = dynamic_cast<CachingAllocator&>(cuda_allocator(device_));
    pool_ = memory.create_private_pool();
    const cudaStream_t stream = compute_stream();
    // Relaxed: the caching allocator may still reserve a new segment (cudaMalloc) while recording.
    CUDA_CHECK(cudaStreamBeginCapture(stream, cudaStreamCaptureModeRelaxed));
    memory.begin_private_pool(pool_);
    bool recorded = true;
    try {
      work();
    } catch (const Error&) {
      recorded = false;
    }
    memory.end_private_pool();
    cudaGraph_t graph = nullptr;
    const cudaError_t ended = cudaStreamEndCapture(stream, &graph);
    if (recorded && ended == cudaSuccess && graph != nullptr) {
      CUDA_CHECK(cudaGraphInstantiate(&exec_, graph, 0));
      CUDA_CHECK(cudaGraphDestroy(graph));
      return true;
    }
    if (graph != nullptr) cudaGraphDestroy(graph);
    (void)cudaGetLastError();  // the invalidated capture's error is not the caller's
    reset();
    return false;
  }

  void replay() {
    BRAID_CHECK(exec_ != nullptr, "CapturedGraph: replay before a successful capture");
    CUDA_CHECK(cudaGraphLaunch(exec_, compute_stream()));
  }

  bool captured() const { return exec_ != nullptr; }

  // Destroys the graph and gives its pool back (its blocks are reused after the graph's last replay
  // on the same stream, so no synchronization is needed).
  void reset() {
    if (exec_ != nullptr) cudaGraphExecDestroy(exec_);
    exec_ = nullptr;
    if (pool_ != 0) dynamic_cast<CachingAllocator&>(cuda_allocator(device_)).release_private_pool(pool_);
    pool_ = 0;
  }

 private:
  cudaGraphExec_t exec_ = nullptr;
  PoolId pool_ = 0;
  int device_ = 0;
};

}  // namespace braid
