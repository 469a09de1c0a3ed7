// NCCL collectives on a communication stream of the local rank's device (runtime/communicator.h).
#include <chrono>
#include <thread>

#include "runtime/communicator.h"
#include "runtime/cuda_check.h"
#include "runtime/cuda_stream.h"
#include "runtime/device_copy.h"
#include "runtime/nccl_check.h"

namespace braid {

namespace {

class NcclCollectives : public Collectives {
 public:
  NcclCollectives(Communicator& communicator, int device) : communicator_(communicator), device_(device) {
    cuda_set_device(device_);
    ncclUniqueId id{};
    if (communicator_.rank() == 0) NCCL_CHECK(ncclGetUniqueId(&id));
    communicator_.broadcast(&id, sizeof id, 0);
    NCCL_CHECK(ncclCommInitRank(&comm_, communicator_.size(), id, communicator_.rank()));
    // Non-blocking: the legacy default stream (compute_stream()) would otherwise serialize with it.
    CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
    CUDA_CHECK(cudaEventCreateWithFlags(&compute_ready_, cudaEventDisableTiming));
    CUDA_CHECK(cudaEventCreateWithFlags(&comm_done_, cudaEventDisableTiming));
  }
  ~NcclCollectives() override {
    // Pending work has been waited for (or the comm aborted); destruction must not throw.
    if (comm_) ncclCommDestroy(comm_);
    cudaEventDestroy(comm_done_);
    cudaEventDestroy(compute_ready_);
    cudaStreamDestroy(stream_);
  }

  void stage(float* dst, const float* src, int64_t count) override {
    const size_t bytes = size_t(count) * sizeof(float);
    if (src) CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, compute_stream()));
    else CUDA_CHECK(cudaMemsetAsync(dst, 0, bytes, compute_stream()));
  }
  void all_reduce_sum(float* data, int64_t count) override {
    after_compute();
    checked(ncclAllReduce(data, data, size_t(count), ncclFloat32, ncclSum, comm_, stream_), "ncclAllReduce");
  }
  void reduce_scatter_sum(const float* send, float* recv, int64_t recv_count) override {
    after_compute();
    checked(ncclReduceScatter(send, recv, size_t(recv_count), ncclFloat32, ncclSum, comm_, stream_),
            "ncclReduceScatter");
  }
  void all_gather(float* data, int64_t count) override {
    after_compute();
    // In place: this rank's block already sits at data + rank * count.
    checked(ncclAllGather(data + int64_t(communicator_.rank()) * count, data, size_t(count), ncclFloat32, comm_,
                          stream_),
            "ncclAllGather");
  }
  void wait() override {
    if (!pending_) return;
    pending_ = false;
    CUDA_CHECK(cudaEventRecord(comm_done_, stream_));
    // Poll rather than block, so that a peer that died or hung (NCCL waits for it forever) or an
    // asynchronous NCCL error ends in ncclCommAbort and an error within the timeout.
    const auto deadline =
        std::chrono::steady_clock::now() + std::chrono::duration<double>(communicator_.timeout_seconds());
    for (int polls = 0;; ++polls) {
      const cudaError_t state = cudaEventQuery(comm_done_);
      if (state == cudaSuccess) break;
      if (state != cudaErrorNotReady) CUDA_CHECK(state);
      ncclResult_t async = ncclSuccess;
      NCCL_CHECK(ncclCommGetAsyncError(comm_, &async));
      if (async != ncclSuccess) fail(str("NCCL error: ", ncclGetErrorString(async)));
      if (std::chrono::steady_clock::now() > deadline)
        fail(str("a gradient collective did not finish within ", communicator_.timeout_seconds(),
                 " s (a peer rank hung or died)"));
      if (polls > 1000) std::this_thread::sleep_for(std::chrono::microseconds(20));
    }
    CUDA_CHECK(cudaStreamWaitEvent(compute_stream(), comm_done_, 0));
  }

 private:
  // The collective reads what the compute stream has produced so far.
  void after_compute() {
    CUDA_CHECK(cudaEventRecord(compute_ready_, compute_stream()));
    CUDA_CHECK(cudaStreamWaitEvent(stream_, compute_ready_, 0));
    pending_ = true;
  }
  void checked(ncclResult_t status, const char* call) {
    if (status != ncclSuccess) fail(str(call, ": NCCL error: ", ncclGetErrorString(status)));
  }
  [[noreturn]] void fail(const std::string& message) {
    ncclCommAbort(comm_);  // frees the stream of collectives that will never finish
    comm_ = nullptr;
    BRAID_FAIL(communicator_.where(), ": ", message, "; aborting the job");
  }

  Communicator& communicator_;
  int device_;
  ncclComm_t comm_ = nullptr;
  cudaStream_t stream_ = nullptr;
  cudaEvent_t compute_ready_ = nullptr, comm_done_ = nullptr;
  bool pending_ = false;
};

}  // namespace

std::unique_ptr<Collectives> make_nccl_collectives(Communicator& communicator, int device) {
  return std::make_unique<NcclCollectives>(communicator, device);
}

}  // namespace braid
