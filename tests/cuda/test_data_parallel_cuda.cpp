// Data parallelism through NCCL (issue 7 on 2 and 4 GPUs of one node): build/train under
// `mpirun -np N --device cuda --dtype fp32` (one rank per GPU, device = local rank) gives the weights
// of one GPU with N times the micro-batches; ZeRO-1 gives those of plain data parallelism; a ZeRO-1
// checkpoint of N GPUs resumed on one continues the same loss curve. Skips with fewer than 2 GPUs.
// Each comparison prints its measured difference beside the run-to-run difference of two identical
// single-GPU runs (the fp32 rounding floor of this backend).
#include <cstdio>
#include <filesystem>

#include "runtime/device.h"
#include "tests/cuda/cuda_test_util.h"
#include "tests/train_runs.h"

namespace braid {
namespace {

namespace fs = std::filesystem;
using testing::max_relative_difference;
using testing::Outcome;

class DataParallelCuda : public testing::CudaTest {
 protected:
  void SetUp() override {
    testing::CudaTest::SetUp();
    if (IsSkipped()) return;
    if (cuda_device_count() < 2) GTEST_SKIP() << "data parallelism over NCCL needs 2 or more GPUs, found " << cuda_device_count();
    const fs::path binary = fs::read_symlink("/proc/self/exe").parent_path().parent_path() / "train";
    if (!fs::exists(binary)) GTEST_SKIP() << binary << " is not built";
    if (!testing::mpirun_available()) GTEST_SKIP() << "mpirun is not installed";
    runs_ = std::make_unique<testing::TrainRuns>(binary, ::testing::UnitTest::GetInstance()->current_test_info()->name());
  }

  // fp32 on the GPU (TF32 off) so that only the summation order differs from one GPU.
  Outcome run(int ranks, const std::string& out, const std::string& extra) const {
    return runs_->run(ranks, out, "--device cuda --dtype fp32 --batch-tokens 256 " + extra);
  }

  std::unique_ptr<testing::TrainRuns> runs_;
};

TEST_F(DataParallelCuda, RanksEqualOneGpuAndZeroOneEqualsPlain) {
  Outcome one = run(0, "one", "--steps 6");
  ASSERT_EQ(one.exit_code, 0) << one.output;
  Outcome again = run(0, "again", "--steps 6");
  ASSERT_EQ(again.exit_code, 0) << again.output;
  const auto reference = runs_->tensors("one/step_00000006");
  const double floor = max_relative_difference(runs_->tensors("again/step_00000006"), reference);
  for (int ranks : {2, 4}) {
    if (ranks > cuda_device_count()) continue;
    SCOPED_TRACE(std::to_string(ranks) + " GPUs");
    const std::string plain = "plain" + std::to_string(ranks), zero = "zero" + std::to_string(ranks);
    Outcome parallel = run(ranks, plain, "--steps 6 --bucket-mb 0.004");
    ASSERT_EQ(parallel.exit_code, 0) << parallel.output;
    Outcome sharded = run(ranks, zero, "--steps 6 --bucket-mb 0.004 --zero1");
    ASSERT_EQ(sharded.exit_code, 0) << sharded.output;
    const double vs_one = max_relative_difference(runs_->tensors(plain + "/step_00000006"), reference);
    const double zero_vs_plain =
        max_relative_difference(runs_->tensors(zero + "/step_00000006"), runs_->tensors(plain + "/step_00000006"));
    const double moments = max_relative_difference(runs_->tensors(zero + "/step_00000006", true),
                                                   runs_->tensors(plain + "/step_00000006", true));
    std::printf("{\"test\": \"data_parallel_nccl\", \"gpus\": %d, \"weights_vs_one_gpu\": %.3g, "
                "\"zero1_vs_plain\": %.3g, \"zero1_moments_vs_plain\": %.3g, \"one_gpu_run_to_run\": %.3g}\n",
                ranks, vs_one, zero_vs_plain, moments, floor);
    EXPECT_LT(vs_one, 1e-4);
    EXPECT_LT(zero_vs_plain, 1e-4);
    EXPECT_LT(moments, 1e-3);
    const std::vector<double> a = runs_->losses(plain), b = runs_->losses("one"), z = runs_->losses(zero);
    ASSERT_EQ(a.size(), 6u);
    ASSERT_EQ(b.size(), 6u);
    ASSERT_EQ(z.size(), 6u);
    for (size_t i = 0; i < a.size(); ++i) {
      EXPECT_NEAR(a[i], b[i], 1e-5 * std::abs(b[i])) << "step " << i + 1;
      EXPECT_NEAR(z[i], a[i], 1e-5 * std::abs(a[i])) << "step " << i + 1;
    }
  }
  // A run on other data differs by far more than the tolerances above.
  Outcome other = run(0, "other", "--steps 6 --seed 99");
  ASSERT_EQ(other.exit_code, 0) << other.output;
  EXPECT_GT(max_relative_difference(runs_->tensors("other/step_00000006"), reference), 1e-3);
}

TEST_F(DataParallelCuda, ZeroOneCheckpointResumedOnOneGpuContinuesTheLossCurve) {
  const int ranks = cuda_device_count() >= 4 ? 4 : 2;
  Outcome straight = run(ranks, "straight", "--steps 8");
  ASSERT_EQ(straight.exit_code, 0) << straight.output;
  Outcome first = run(ranks, "resumed", "--steps 8 --checkpoint-every 4 --zero1");
  ASSERT_EQ(first.exit_code, 0) << first.output;
  fs::remove_all(runs_->dir() / "resumed" / "step_00000008");
  Outcome resumed = run(0, "resumed", "--steps 8 --resume " + (runs_->dir() / "resumed" / "step_00000004").string());
  ASSERT_EQ(resumed.exit_code, 0) << resumed.output;
  const std::vector<double> a = runs_->losses("straight"), b = runs_->losses("resumed");
  ASSERT_EQ(a.size(), 8u);
  ASSERT_EQ(b.size(), 12u);
  for (size_t i = 4; i < 8; ++i) EXPECT_NEAR(b[i + 4], a[i], 1e-5 * std::abs(a[i])) << "step " << i + 1;
  const double difference =
      max_relative_difference(runs_->tensors("resumed/step_00000008"), runs_->tensors("straight/step_00000008"));
  std::printf("{\"test\": \"resume_%d_gpus_on_1\", \"weights_vs_uninterrupted\": %.3g}\n", ranks, difference);
  EXPECT_LT(difference, 1e-4);
}

}  // namespace
}  // namespace braid
