// Bus bandwidth of the communicator's fp32 all-reduce (runtime/communicator.h, the path gradient
// buckets take) against a plain ncclAllReduce loop of the same size on its own communicator and
// stream, in the same run: NCCL's own figure, measured the way nccl-tests does (launch `iters`
// collectives, then wait for all). busbw = algbw * 2(n-1)/n, algbw = bytes / time per all-reduce.
// Rank 0 prints one JSON line per size.
//
//   NCCL_NVLS_ENABLE=0 mpirun -np 4 build/bench_allreduce [--bytes 1073741824] [--iters 20] [--rounds 3]
#include <cuda_runtime.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <vector>
#include <chrono>
#include <cstdio>
#include <string>

#include "runtime/communicator.h"
#include "runtime/cuda_check.h"
#include "runtime/nccl_check.h"
#include "runtime/tensor.h"

namespace {

using namespace braid;
using Clock = std::chrono::steady_clock;

struct Options {
  int64_t bytes = int64_t(1) << 30;
  int iters = 20;
  int rounds = 3;  // alternating rounds of the two; the best of each counts
};

Options parse(int argc, char** argv) {
  Options options;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    auto value = [&]() -> std::string {
      BRAID_CHECK(i + 1 < argc, arg, " needs a value");
      return argv[++i];
    };
    if (arg == "--bytes") options.bytes = std::stoll(value());
    else if (arg == "--iters") options.iters = std::stoi(value());
    else if (arg == "--rounds") options.rounds = std::stoi(value());
    else BRAID_FAIL("unknown option ", arg, " (--bytes N, --iters N, --rounds N)");
  }
  BRAID_CHECK(options.bytes >= 4 && options.iters > 0 && options.rounds > 0, "--bytes, --iters and --rounds must be positive");
  return options;
}

// Seconds per collective of `iters` launched back to back, all ranks starting together.
template <typename Launch, typename Finish>
double time_loop(const Communicator& world, int iters, Launch launch, Finish finish) {
  CUDA_CHECK(cudaDeviceSynchronize());
  world.barrier();
  const auto begin = Clock::now();
  for (int i = 0; i < iters; ++i) launch();
  finish();
  const double local = std::chrono::duration<double>(Clock::now() - begin).count();
  double slowest = local;  // a collective ends when its slowest rank does
  std::vector<double> all(size_t(world.size()), 0.0);
  all[size_t(world.rank())] = local;
  world.all_reduce_sum(all.data(), int64_t(all.size()));
  for (double t : all) slowest = std::max(slowest, t);
  return slowest / iters;
}

}  // namespace

int main(int argc, char** argv) {
  Communicator& world = Communicator::world();
  try {
    const Options options = parse(argc, argv);
    BRAID_CHECK(world.size() > 1, "run under mpirun with 2 or more ranks (one per GPU)");
    BRAID_CHECK(world.local_rank() < cuda_device_count(), world.where(), ": local rank ", world.local_rank(),
                " has no GPU (", cuda_device_count(), " here)");
    const Device device = Device::cuda(world.local_rank());
    CUDA_CHECK(cudaSetDevice(device.index));
    const int64_t count = options.bytes / int64_t(sizeof(float));
    const double bytes = double(count) * sizeof(float);
    Tensor ours = Tensor::full({count}, 1.0, DType::f32, device);
    Tensor theirs = Tensor::full({count}, 1.0, DType::f32, device);

    std::unique_ptr<Collectives> collectives = make_collectives(world, device);
    ncclUniqueId id{};
    if (world.rank() == 0) NCCL_CHECK(ncclGetUniqueId(&id));
    world.broadcast(&id, sizeof id, 0);
    ncclComm_t comm = nullptr;
    NCCL_CHECK(ncclCommInitRank(&comm, world.size(), id, world.rank()));
    cudaStream_t stream = nullptr;
    CUDA_CHECK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));

    auto ours_loop = [&](int iters) {
      return time_loop(world, iters, [&] { collectives->all_reduce_sum(ours.data<float>(), count); },
                       [&] { collectives->wait(); CUDA_CHECK(cudaDeviceSynchronize()); });
    };
    auto nccl_loop = [&](int iters) {
      return time_loop(
          world, iters,
          [&] { NCCL_CHECK(ncclAllReduce(theirs.data<float>(), theirs.data<float>(), size_t(count), ncclFloat32, ncclSum, comm, stream)); },
          [&] { CUDA_CHECK(cudaStreamSynchronize(stream)); });
    };
    ours_loop(3);  // warm-up: connections, buffers
    nccl_loop(3);
    double best_ours = 1e30, best_nccl = 1e30;
    for (int round = 0; round < options.rounds; ++round) {
      best_nccl = std::min(best_nccl, nccl_loop(options.iters));
      best_ours = std::min(best_ours, ours_loop(options.iters));
    }
    // Proof that the timed path really sums: ones become the number of ranks.
    ours.fill_(1.0);
    collectives->all_reduce_sum(ours.data<float>(), count);
    collectives->wait();
    const std::vector<double> ends = {Tensor(ours.narrow(0, 0, 1)).item(), Tensor(ours.narrow(0, count - 1, 1)).item()};
    const bool summed = ends[0] == double(world.size()) && ends[1] == double(world.size());
    CUDA_CHECK(cudaStreamDestroy(stream));
    NCCL_CHECK(ncclCommDestroy(comm));

    const double n = world.size(), factor = 2.0 * (n - 1) / n;
    if (world.rank() == 0) {
      cudaDeviceProp card{};
      CUDA_CHECK(cudaGetDeviceProperties(&card, device.index));
      const double ours_busbw = bytes / best_ours * factor / 1e9, nccl_busbw = bytes / best_nccl * factor / 1e9;
      const nlohmann::json line = {{"bench", "allreduce"},
                                   {"card", card.name},
                                   {"ranks", world.size()},
                                   {"bytes", int64_t(bytes)},
                                   {"dtype", "f32"},
                                   {"iters", options.iters},
                                   {"communicator_ms", best_ours * 1e3},
                                   {"nccl_ms", best_nccl * 1e3},
                                   {"communicator_busbw_GBps", ours_busbw},
                                   {"nccl_busbw_GBps", nccl_busbw},
                                   {"ratio", ours_busbw / nccl_busbw},
                                   {"within_10_percent", ours_busbw >= 0.9 * nccl_busbw},
                                   {"sum_check", summed ? "ok" : "WRONG"}};
      std::printf("%s\n", line.dump().c_str());
      std::fflush(stdout);
    }
    collectives.reset();
    world.finalize();
    return 0;
  } catch (const Error& error) {
    std::fprintf(stderr, "error: %s: %s\n", world.where().c_str(), error.message().c_str());
    world.abort(1);
  }
}
