// build/train under `mpirun -np 2` on the CPU backend (DESIGN.md "Distributed", issue 7): two ranks
// give the weights of one rank with twice the micro-batches; ZeRO-1 gives those of plain data
// parallelism; a 2-rank checkpoint resumed on one rank continues the same loss curve; a rank that
// dies, errs or hangs ends the whole job with a non-zero exit within a bounded time.
#include <gtest/gtest.h>

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <sstream>
#include <thread>

#include "tests/train_runs.h"

namespace braid {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;
using testing::kMpirun;
using testing::max_relative_difference;
using testing::Outcome;

class DataParallelCli : public ::testing::Test {
 protected:
  void SetUp() override {
    const fs::path binary = fs::read_symlink("/proc/self/exe").parent_path().parent_path() / "train";
    if (!fs::exists(binary)) GTEST_SKIP() << binary << " is not built";
    if (!testing::mpirun_available()) GTEST_SKIP() << "mpirun is not installed";
    runs_ = std::make_unique<testing::TrainRuns>(binary, ::testing::UnitTest::GetInstance()->current_test_info()->name());
    dir_ = runs_->dir();
  }
  Outcome run(int ranks, const std::string& out, const std::string& extra) const { return runs_->run(ranks, out, extra); }
  std::vector<double> losses(const std::string& out) const { return runs_->losses(out); }
  std::map<std::string, std::vector<double>> tensors(const std::string& checkpoint, bool optimizer = false) const {
    return runs_->tensors(checkpoint, optimizer);
  }

  std::unique_ptr<testing::TrainRuns> runs_;
  fs::path dir_;
};

TEST_F(DataParallelCli, TwoRanksGiveTheWeightsOfOneRankWithTwiceTheMicroBatches) {
  // The same global batch (--batch-tokens) as 2 x 1 and as 1 x 2 micro-batches, then as 2 x 2 and
  // 1 x 4: the same micro-batches, summed in another order (and the tied embedding's two gradients
  // are added in another order), so equal to fp32 rounding.
  for (const char* batch : {"128", "256"}) {
    SCOPED_TRACE(std::string("--batch-tokens ") + batch);
    const std::string one = std::string("one") + batch, two = std::string("two") + batch;
    Outcome single = run(0, one, std::string("--steps 6 --batch-tokens ") + batch);
    ASSERT_EQ(single.exit_code, 0) << single.output;
    Outcome pair = run(2, two, std::string("--steps 6 --bucket-mb 0.004 --batch-tokens ") + batch);
    ASSERT_EQ(pair.exit_code, 0) << pair.output;
    EXPECT_NE(pair.output.find("x 2 rank(s)"), std::string::npos) << pair.output;
    const auto weights = tensors(one + "/step_00000006");
    std::printf("batch %s: weights differ by %.3g, moments by %.3g (relative)\n", batch,
                max_relative_difference(tensors(two + "/step_00000006"), weights),
                max_relative_difference(tensors(two + "/step_00000006", true), tensors(one + "/step_00000006", true)));
    EXPECT_LT(max_relative_difference(tensors(two + "/step_00000006"), weights), 3e-5);
    EXPECT_LT(max_relative_difference(tensors(two + "/step_00000006", true), tensors(one + "/step_00000006", true)), 1e-4);
    const std::vector<double> a = losses(two), b = losses(one);
    ASSERT_EQ(a.size(), 6u);
    ASSERT_EQ(b.size(), 6u);
    for (size_t i = 0; i < a.size(); ++i) EXPECT_NEAR(a[i], b[i], 1e-6 * std::abs(b[i])) << "step " << i + 1;
    EXPECT_LT(b.back(), b.front());  // it trains
  }
  // The two batches saw different data: the tolerance above is far below a real difference.
  EXPECT_GT(max_relative_difference(tensors("one256/step_00000006"), tensors("one128/step_00000006")), 1e-3);
}

TEST_F(DataParallelCli, ZeroOneGivesTheWeightsOfPlainDataParallel) {
  // Tiny buckets: many buckets, and shards that cut parameters in the middle.
  Outcome plain = run(2, "plain", "--steps 5 --batch-tokens 256 --bucket-mb 0.004");
  ASSERT_EQ(plain.exit_code, 0) << plain.output;
  Outcome zero = run(2, "zero", "--steps 5 --batch-tokens 256 --bucket-mb 0.004 --zero1");
  ASSERT_EQ(zero.exit_code, 0) << zero.output;
  EXPECT_NE(zero.output.find("ZeRO-1"), std::string::npos) << zero.output;
  // Only the global norm's summation order differs (it sets the clip factor).
  EXPECT_LT(max_relative_difference(tensors("zero/step_00000005"), tensors("plain/step_00000005")), 1e-6);
  // The moments, gathered from the two shards into the checkpoint.
  EXPECT_LT(max_relative_difference(tensors("zero/step_00000005", true), tensors("plain/step_00000005", true)), 1e-5);
  const std::vector<double> lz = losses("zero"), lp = losses("plain");
  ASSERT_EQ(lz.size(), 5u);
  for (size_t i = 0; i < lz.size(); ++i) EXPECT_NEAR(lz[i], lp[i], 1e-6 * std::abs(lp[i])) << "step " << i + 1;
}

TEST_F(DataParallelCli, TwoRankCheckpointResumedOnOneRankContinuesTheLossCurve) {
  Outcome straight = run(2, "straight", "--steps 8 --batch-tokens 256");
  ASSERT_EQ(straight.exit_code, 0) << straight.output;
  // The interrupted run shards its optimizer (ZeRO-1): the checkpoint must hold the whole moments.
  Outcome first = run(2, "resumed", "--steps 8 --batch-tokens 256 --checkpoint-every 4 --zero1");
  ASSERT_EQ(first.exit_code, 0) << first.output;
  fs::remove_all(dir_ / "resumed" / "step_00000008");
  Outcome resumed = run(0, "resumed", "--steps 8 --batch-tokens 256 --resume " + (dir_ / "resumed" / "step_00000004").string());
  ASSERT_EQ(resumed.exit_code, 0) << resumed.output;
  EXPECT_NE(resumed.output.find("saved by 2 rank(s), now 1"), std::string::npos) << resumed.output;
  const std::vector<double> a = losses("straight");
  const std::vector<double> b = losses("resumed");  // 8 from the first run, then steps 5..8 again
  ASSERT_EQ(a.size(), 8u);
  ASSERT_EQ(b.size(), 12u);
  for (size_t i = 4; i < 8; ++i) EXPECT_NEAR(b[i + 4], a[i], 1e-5 * std::abs(a[i])) << "step " << i + 1;
  EXPECT_LT(max_relative_difference(tensors("resumed/step_00000008"), tensors("straight/step_00000008")), 5e-5);
}

// Starts `command` (via sh) in its own process group; returns its pid.
pid_t spawn(const std::string& command, const fs::path& log) {
  const pid_t pid = fork();
  if (pid == 0) {
    setpgid(0, 0);
    const std::string line = command + " > " + log.string() + " 2>&1";
    execl("/bin/sh", "sh", "-c", ("exec " + line).c_str(), static_cast<char*>(nullptr));
    _exit(127);
  }
  return pid;
}

// The pid of the process whose environment says it is MPI rank `rank` among the children of `parent`.
pid_t rank_process(pid_t parent, int rank) {
  for (const fs::directory_entry& entry : fs::directory_iterator("/proc")) {
    const std::string name = entry.path().filename().string();
    if (name.find_first_not_of("0123456789") != std::string::npos) continue;
    std::ifstream stat(entry.path() / "stat");
    std::string text((std::istreambuf_iterator<char>(stat)), {});
    const size_t close = text.rfind(')');
    if (close == std::string::npos) continue;
    std::istringstream rest(text.substr(close + 2));
    char state;
    pid_t ppid = 0;
    rest >> state >> ppid;
    if (ppid != parent) continue;
    std::ifstream environ_file(entry.path() / "environ");
    std::string environ_text((std::istreambuf_iterator<char>(environ_file)), {});
    if (environ_text.find(std::string("OMPI_COMM_WORLD_RANK=") + std::to_string(rank) + '\0') != std::string::npos)
      return pid_t(std::stoi(name));
  }
  return 0;
}

// Waits for `pid` to exit, at most `seconds`; returns its exit code, or -1 on timeout (then kills it).
int wait_exit(pid_t pid, double seconds, double& waited) {
  const auto begin = Clock::now();
  for (;;) {
    int status = 0;
    if (waitpid(pid, &status, WNOHANG) == pid) {
      waited = std::chrono::duration<double>(Clock::now() - begin).count();
      return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    }
    if (std::chrono::duration<double>(Clock::now() - begin).count() > seconds) {
      kill(-pid, SIGKILL);
      waitpid(pid, &status, 0);
      return -1;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
}

// Alive and not a zombie (an exited orphan stays a zombie where nothing reaps it, e.g. in a container).
bool running(pid_t pid) {
  std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
  std::string text((std::istreambuf_iterator<char>(stat)), {});
  const size_t close = text.rfind(')');
  return close != std::string::npos && close + 2 < text.size() && text[close + 2] != 'Z' && text[close + 2] != 'X';
}

std::string read_file(const fs::path& path) {
  std::ifstream in(path);
  return std::string((std::istreambuf_iterator<char>(in)), {});
}

// Starts a long 2-rank run, waits until rank 0 has logged a step, and returns mpirun's pid and
// the pids of ranks 0 and 1.
struct Job {
  pid_t mpirun = 0, rank0 = 0, rank1 = 0;
};

class DataParallelFailure : public DataParallelCli {
 protected:
  Job start_long_run(const std::string& extra) {
    Job job;
    job.mpirun = spawn(std::string(kMpirun) + " -np 2 " + runs_->arguments("run", "--steps 100000 " + extra), dir_ / "log");
    const auto begin = Clock::now();
    while (std::chrono::duration<double>(Clock::now() - begin).count() < 60) {
      if (!job.rank0) job.rank0 = rank_process(job.mpirun, 0);
      if (!job.rank1) job.rank1 = rank_process(job.mpirun, 1);
      if (job.rank0 && job.rank1 && read_file(dir_ / "run" / "metrics.jsonl").find("\"loss\"") != std::string::npos)
        return job;
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    kill(-job.mpirun, SIGKILL);
    ADD_FAILURE() << "the 2-rank run did not start training within 60 s:\n" << read_file(dir_ / "log");
    return {};
  }
};

TEST_F(DataParallelFailure, KilledRankEndsTheJobWithinSixtySeconds) {
  const Job job = start_long_run("");
  ASSERT_NE(job.mpirun, 0);
  ASSERT_EQ(kill(job.rank1, SIGKILL), 0);
  double waited = 0;
  const int code = wait_exit(job.mpirun, 60, waited);
  ASSERT_NE(code, -1) << "the job still ran 60 s after rank 1 was killed:\n" << read_file(dir_ / "log");
  EXPECT_NE(code, 0) << read_file(dir_ / "log");
  // The survivor is gone too (not left running as an orphan).
  EXPECT_FALSE(running(job.rank0)) << "rank 0 (pid " << job.rank0 << ") is still running";
}

TEST_F(DataParallelFailure, HungRankMakesThePeerTimeOutAndEndTheJob) {
  const Job job = start_long_run("--collective-timeout 3");
  ASSERT_NE(job.mpirun, 0);
  ASSERT_EQ(kill(job.rank1, SIGSTOP), 0);  // alive but silent: only the timeout can notice
  double waited = 0;
  const int code = wait_exit(job.mpirun, 60, waited);
  const std::string log = read_file(dir_ / "log");
  kill(job.rank1, SIGKILL);
  ASSERT_NE(code, -1) << "the job still ran 60 s after rank 1 stopped:\n" << log;
  EXPECT_NE(code, 0) << log;
  EXPECT_NE(log.find("error: rank 0/2: "), std::string::npos) << log;
  EXPECT_NE(log.find("did not finish within 3 s"), std::string::npos) << log;
}

TEST_F(DataParallelCli, ErrorOnOneRankEndsEveryRank) {
  // Only rank 0 writes, so only rank 0 finds the output path unusable; rank 1 goes on to train
  // and would wait forever for its peer without the abort.
  std::ofstream(dir_ / "a_file") << "x";
  const auto begin = Clock::now();
  Outcome outcome = run(2, "a_file/run", "--steps 1000");
  const double seconds = std::chrono::duration<double>(Clock::now() - begin).count();
  EXPECT_NE(outcome.exit_code, 0) << outcome.output;
  EXPECT_LT(seconds, 60);
  EXPECT_NE(outcome.output.find("error: rank 0/2: "), std::string::npos) << outcome.output;
  EXPECT_NE(outcome.output.find("a_file"), std::string::npos) << outcome.output;
}

}  // namespace
}  // namespace braid
