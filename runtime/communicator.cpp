// Only MPI's C interface (its C++ bindings do not compile warning-free).
#define OMPI_SKIP_MPICXX 1
#include "runtime/communicator.h"

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <thread>
#include <vector>

#include "runtime/mpi_check.h"

namespace braid {

namespace {

// A launcher sets one of these in every rank's environment (Open MPI's mpirun, PMIx and PMI-2
// launchers, Slurm's srun).
bool launched_by_mpi() {
  for (const char* name : {"OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "PMI_RANK", "PMI_SIZE", "SLURM_PROCID"})
    if (std::getenv(name) != nullptr) return true;
  return false;
}

// Waits for `count` requests, giving up after `timeout` seconds: a peer that hangs must not hang us.
void wait_bounded(MPI_Request* requests, int count, double timeout, const std::string& where, const char* what) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(timeout);
  for (int polls = 0;; ++polls) {
    int done = 0;
    MPI_CHECK(MPI_Testall(count, requests, &done, MPI_STATUSES_IGNORE));
    if (done) return;
    BRAID_CHECK(std::chrono::steady_clock::now() < deadline, where, ": ", what, " did not finish within ",
                timeout, " s (a peer rank hung or died); aborting the job");
    if (polls > 1000) std::this_thread::sleep_for(std::chrono::microseconds(50));
  }
}

class MpiCollectives : public Collectives {
 public:
  explicit MpiCollectives(Communicator& communicator) : communicator_(communicator) {}
  ~MpiCollectives() override {
    for (MPI_Request& request : requests_)
      if (request != MPI_REQUEST_NULL) MPI_Request_free(&request);
  }

  void stage(float* dst, const float* src, int64_t count) override {
    if (src) std::memcpy(dst, src, size_t(count) * sizeof(float));
    else std::memset(dst, 0, size_t(count) * sizeof(float));
  }
  void all_reduce_sum(float* data, int64_t count) override {
    if (communicator_.size() == 1) return;
    MPI_CHECK(MPI_Iallreduce(MPI_IN_PLACE, data, checked(count), MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD,
                             &requests_.emplace_back()));
  }
  void reduce_scatter_sum(const float* send, float* recv, int64_t recv_count) override {
    if (communicator_.size() == 1) return stage(recv, send, recv_count);
    MPI_CHECK(MPI_Ireduce_scatter_block(send, recv, checked(recv_count), MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD,
                                        &requests_.emplace_back()));
  }
  void all_gather(float* data, int64_t count) override {
    if (communicator_.size() == 1) return;
    MPI_CHECK(MPI_Iallgather(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, data, checked(count), MPI_FLOAT,
                             MPI_COMM_WORLD, &requests_.emplace_back()));
  }
  void wait() override {
    if (requests_.empty()) return;
    wait_bounded(requests_.data(), int(requests_.size()), communicator_.timeout_seconds(), communicator_.where(),
                 "a gradient collective");
    requests_.clear();
  }

 private:
  int checked(int64_t count) const {
    BRAID_CHECK(count <= INT32_MAX, communicator_.where(), ": a collective of ", count,
                " floats exceeds MPI's int count; use smaller buckets");
    return int(count);
  }
  Communicator& communicator_;
  std::vector<MPI_Request> requests_;
};

}  // namespace

#ifdef BRAID_CUDA
std::unique_ptr<Collectives> make_nccl_collectives(Communicator& communicator, int device);  // communicator_cuda.cpp
#endif

Communicator& Communicator::world() {
  static Communicator communicator;
  return communicator;
}

Communicator::Communicator() {
  if (const char* timeout = std::getenv("BRAID_COLLECTIVE_TIMEOUT")) set_timeout_seconds(std::atof(timeout));
  if (!launched_by_mpi()) return;
  int initialized = 0;
  MPI_CHECK(MPI_Initialized(&initialized));
  if (!initialized) {
    // Only the main thread calls MPI (OpenMP threads run kernels).
    int provided = 0;
    MPI_CHECK(MPI_Init_thread(nullptr, nullptr, MPI_THREAD_FUNNELED, &provided));
  }
  // Errors come back as codes, so MPI_CHECK turns them into braid::Error naming the call.
  MPI_CHECK(MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN));
  uses_mpi_ = true;
  MPI_CHECK(MPI_Comm_rank(MPI_COMM_WORLD, &rank_));
  MPI_CHECK(MPI_Comm_size(MPI_COMM_WORLD, &size_));
  MPI_Comm node;
  MPI_CHECK(MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, rank_, MPI_INFO_NULL, &node));
  MPI_CHECK(MPI_Comm_rank(node, &local_rank_));
  MPI_CHECK(MPI_Comm_size(node, &local_size_));
  MPI_CHECK(MPI_Comm_free(&node));
}

void Communicator::set_timeout_seconds(double seconds) {
  BRAID_CHECK(seconds > 0, "collective timeout must be positive, got ", seconds, " s");
  timeout_seconds_ = seconds;
}

std::string Communicator::where() const { return str("rank ", rank_, "/", size_); }

void Communicator::all_reduce_sum(double* data, int64_t count) const {
  if (size_ == 1) return;
  MPI_Request request;
  MPI_CHECK(MPI_Iallreduce(MPI_IN_PLACE, data, int(count), MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD, &request));
  wait_bounded(&request, 1, timeout_seconds_, where(), "an all-reduce");
}

void Communicator::all_reduce_sum(float* data, int64_t count) const {
  if (size_ == 1) return;
  MPI_Request request;
  MPI_CHECK(MPI_Iallreduce(MPI_IN_PLACE, data, int(count), MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD, &request));
  wait_bounded(&request, 1, timeout_seconds_, where(), "an all-reduce");
}

void Communicator::all_reduce_sum(int64_t* data, int64_t count) const {
  if (size_ == 1) return;
  MPI_Request request;
  MPI_CHECK(MPI_Iallreduce(MPI_IN_PLACE, data, int(count), MPI_INT64_T, MPI_SUM, MPI_COMM_WORLD, &request));
  wait_bounded(&request, 1, timeout_seconds_, where(), "an all-reduce");
}

void Communicator::all_reduce_max(int32_t* data, int64_t count) const {
  if (size_ == 1) return;
  MPI_Request request;
  MPI_CHECK(MPI_Iallreduce(MPI_IN_PLACE, data, int(count), MPI_INT32_T, MPI_MAX, MPI_COMM_WORLD, &request));
  wait_bounded(&request, 1, timeout_seconds_, where(), "an all-reduce");
}

void Communicator::broadcast(void* data, int64_t bytes, int root) const {
  if (size_ == 1) return;
  MPI_Request request;
  MPI_CHECK(MPI_Ibcast(data, int(bytes), MPI_BYTE, root, MPI_COMM_WORLD, &request));
  wait_bounded(&request, 1, timeout_seconds_, where(), "a broadcast");
}

void Communicator::barrier() const {
  if (size_ == 1) return;
  MPI_Request request;
  MPI_CHECK(MPI_Ibarrier(MPI_COMM_WORLD, &request));
  wait_bounded(&request, 1, timeout_seconds_, where(), "a barrier");
}

void Communicator::abort(int code) const {
  std::fflush(stdout);
  std::fflush(stderr);
  if (uses_mpi_ && size_ > 1) MPI_Abort(MPI_COMM_WORLD, code);
  std::_Exit(code);
}

void Communicator::finalize() {
  if (!uses_mpi_ || finalized_) return;
  finalized_ = true;
  MPI_CHECK(MPI_Finalize());
}

std::unique_ptr<Collectives> make_collectives(Communicator& communicator, const Device& device) {
  if (device.is_cpu()) return std::make_unique<MpiCollectives>(communicator);
#ifdef BRAID_CUDA
  return make_nccl_collectives(communicator, device.index);
#else
  BRAID_FAIL("collectives on ", device.to_string(), " need a CUDA build");
#endif
}

}  // namespace braid
