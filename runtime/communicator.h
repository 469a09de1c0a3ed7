// The distributed communicator (DESIGN.md "Distributed"): one process per device, launched by
// mpirun or srun.
//
// Communicator: the ranks of the job through MPI. A process started without a launcher (no
// OMPI_/PMIX_/PMI_/SLURM_ rank variables) is a world of one rank and never touches MPI, so the
// train binary runs directly exactly as before. Every MPI call is checked; every wait is bounded
// by a timeout, after which the job is aborted instead of hanging.
//
// Collectives: asynchronous fp32 collectives on buffers of one device, the same interface on both
// backends: MPI non-blocking collectives on host memory (CPU backend), NCCL on a communication
// stream (CUDA backend; the NCCL unique id is broadcast over MPI, the device is the local rank).
// Launches are ordered after the work already queued on the compute stream and run beside the
// work queued after them; wait() returns when all have finished.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "runtime/device.h"

namespace braid {

class Communicator {
 public:
  // The job's world, set up on first use (MPI_Init_thread when launched by mpirun or srun).
  static Communicator& world();

  int rank() const { return rank_; }
  int size() const { return size_; }
  // Rank among the ranks of this node (from an MPI shared-memory split): the device to use.
  int local_rank() const { return local_rank_; }
  int local_size() const { return local_size_; }
  bool uses_mpi() const { return uses_mpi_; }

  // Longest wait for any collective before the job is declared hung (seconds).
  double timeout_seconds() const { return timeout_seconds_; }
  void set_timeout_seconds(double seconds);

  // Blocking host collectives (bounded by the timeout): element-wise sums in place, a maximum,
  // a broadcast of bytes from `root`, and a barrier.
  void all_reduce_sum(double* data, int64_t count) const;
  void all_reduce_sum(float* data, int64_t count) const;
  void all_reduce_sum(int64_t* data, int64_t count) const;
  void all_reduce_max(int32_t* data, int64_t count) const;
  void broadcast(void* data, int64_t bytes, int root) const;
  void barrier() const;

  // Ends every rank of the job with `code` (MPI_Abort); a plain exit in a world of one.
  [[noreturn]] void abort(int code) const;
  // MPI_Finalize (at most once; nothing without MPI). Called by the binaries on a normal exit.
  void finalize();

  // "rank 1/4" for messages.
  std::string where() const;

 private:
  Communicator();
  int rank_ = 0, size_ = 1, local_rank_ = 0, local_size_ = 1;
  bool uses_mpi_ = false;
  bool finalized_ = false;
  double timeout_seconds_ = 600;
};

class Collectives {
 public:
  virtual ~Collectives() = default;
  // Copies `count` floats from `src` to `dst` (or zeros `dst` when `src` is null) in compute-stream
  // order: how gradients are staged into buckets and weights copied back.
  virtual void stage(float* dst, const float* src, int64_t count) = 0;
  // In place: data = sum over ranks.
  virtual void all_reduce_sum(float* data, int64_t count) = 0;
  // send holds size * recv_count floats; recv = this rank's block of the sum over ranks.
  virtual void reduce_scatter_sum(const float* send, float* recv, int64_t recv_count) = 0;
  // In place: data holds size * count floats; every rank contributes its block
  // data[rank * count, (rank + 1) * count) and receives all blocks.
  virtual void all_gather(float* data, int64_t count) = 0;
  // Returns when every launched collective has finished and later compute-stream work is ordered
  // after them; a failure or the timeout raises braid::Error naming the rank.
  virtual void wait() = 0;
};

// Collectives over `communicator` on buffers of `device` (MPI on the CPU, NCCL on CUDA).
std::unique_ptr<Collectives> make_collectives(Communicator& communicator, const Device& device);

}  // namespace braid
