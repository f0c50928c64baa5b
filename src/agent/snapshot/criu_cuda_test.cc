// Tests of the CudaCheckpointer's use by the CRIU snapshotter: real CRIU dumps and restores of a
// small process (no CUDA in it) that the fake driver (fake_cuda_driver.h) reports as holding a
// CUDA context. They need CRIU >= 4.1 and root, like snapshot_test.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "agent/snapshot/criu.h"
#include "agent/snapshot/cuda_checkpoint.h"
#include "agent/snapshot/fake_cuda_driver.h"
#include "agent/snapshot/test_processes.h"

namespace gantry::agent {
namespace {

using fake_cuda::Contains;
using fake_cuda::CudaCheckpointerTest;
using fake_cuda::FakeApi;
using test_processes::ProcState;
using test_processes::ReadFile;
using test_processes::Spawn;
using test_processes::WaitFor;

namespace fs = std::filesystem;
using std::chrono::milliseconds;
using std::chrono::steady_clock;

// --- The CRIU snapshotter with a CudaCheckpointer ---------------------------------------------

constexpr const char* kPython = "/usr/bin/python3";
// A process that keeps running (CUDA needs it to) and counts into a file.
constexpr const char* kLoopScript = R"PY(
import os, sys, time
i = 0
while True:
    i += 1
    with open(sys.argv[1] + ".tmp", "w") as f:
        f.write(str(i))
    os.rename(sys.argv[1] + ".tmp", sys.argv[1])
    time.sleep(0.005)
)PY";

// True once `path` holds a count above `above` (within 5 s).
bool CountsPast(const std::string& path, int above) {
  const auto deadline = steady_clock::now() + milliseconds(5000);
  while (steady_clock::now() < deadline) {
    const std::string text = ReadFile(path);
    if (!text.empty() && std::stoi(text) > above) return true;
    std::this_thread::sleep_for(milliseconds(5));
  }
  return false;
}

class CriuCudaTest : public CudaCheckpointerTest {
 protected:
  void SetUp() override {
    CudaCheckpointerTest::SetUp();
    ASSERT_EQ(prctl(PR_SET_CHILD_SUBREAPER, 1), 0);
    Result<std::string> criu = FindCriu();
    ASSERT_TRUE(criu.ok()) << "CRIU >= 4.1 is needed for these tests; run scripts/setup.sh. "
                           << criu.status().message();
    ASSERT_EQ(geteuid(), 0u) << "CRIU needs root";
    criu_ = *criu;
    cuda_ = NewCudaCheckpointer(FakeApi());
    CriuOptions options;
    options.timeout_ms = 20'000;
    options.lazy_drain_timeout_ms = 10'000;
    options.cuda = cuda_.get();
    snapshotter_ = NewCriuSnapshotter(criu_, options);
    char tmpl[] = "/tmp/gantry-cuda-checkpoint-test.XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    tmp_ = tmpl;
    images_ = tmp_ + "/images";
    counter_ = tmp_ + "/counter";
    fake_.watch = images_ + "/inventory.img";
  }

  void TearDown() override {
    snapshotter_.reset();
    for (int pid : started_) {
      kill(pid, SIGKILL);
      WaitFor(pid, 0, 5000);
    }
    std::error_code ec;
    fs::remove_all(tmp_, ec);
    CudaCheckpointerTest::TearDown();
  }

  // Starts the counting process; the fake driver says it holds a CUDA context if `cuda`.
  int StartLoop(bool cuda) {
    const int pid = Spawn({kPython, "-c", kLoopScript, counter_});
    EXPECT_GT(pid, 0);
    if (pid <= 0) return pid;
    started_.push_back(pid);
    EXPECT_TRUE(CountsPast(counter_, 0)) << "the process did not start counting";
    if (cuda) {
      std::lock_guard<std::mutex> lock(fake_.mu);
      fake_.states[pid] = cuda::CU_PROCESS_STATE_RUNNING;
    }
    return pid;
  }

  std::string Marker() const { return images_ + "/" + kCudaSuspendedMarker; }

  std::string criu_;
  std::unique_ptr<CudaCheckpointer> cuda_;
  std::unique_ptr<Snapshotter> snapshotter_;
  std::string tmp_, images_, counter_;
  std::vector<int> started_;
};

TEST_F(CriuCudaTest, LeaveRunningDumpSuspendsBeforeAndResumesAfter) {
  const int pid = StartLoop(/*cuda=*/true);
  ASSERT_GT(pid, 0);
  Status s = snapshotter_->Dump(pid, images_, /*leave_running=*/true);
  ASSERT_TRUE(s.ok()) << s.ToString();
  EXPECT_EQ(fake_.Actions(),
            (std::vector<std::string>{"init", "lock", "checkpoint", "restore", "unlock"}));
  // criu dumped between the checkpoint and the restore.
  EXPECT_FALSE(fake_.Find("checkpoint")->watched_exists);
  EXPECT_TRUE(fake_.Find("restore")->watched_exists);
  EXPECT_EQ(fake_.Find("lock")->pid, pid);
  EXPECT_EQ(fake_.last_lock_timeout, 20'000u);  // CriuOptions::timeout_ms
  EXPECT_TRUE(fs::exists(Marker()));
  EXPECT_EQ(fake_.StateOf(pid), cuda::CU_PROCESS_STATE_RUNNING);
  // Still running.
  const int now = std::stoi(ReadFile(counter_));
  EXPECT_TRUE(CountsPast(counter_, now + 2));
}

TEST_F(CriuCudaTest, RestoreResumesTheGpuStateOfTheRestoredProcess) {
  const int pid = StartLoop(/*cuda=*/true);
  ASSERT_GT(pid, 0);
  Status s = snapshotter_->Dump(pid, images_, /*leave_running=*/false);
  ASSERT_TRUE(s.ok()) << s.ToString();
  EXPECT_EQ(fake_.Actions(), (std::vector<std::string>{"init", "lock", "checkpoint"}));
  EXPECT_TRUE(fs::exists(Marker()));
  std::optional<int> status = WaitFor(pid, 0, 5000);  // criu killed it
  ASSERT_TRUE(status.has_value());
  EXPECT_TRUE(WIFSIGNALED(*status)) << *status;
  // The driver would report the restored process as checkpointed: the fake keeps its state.
  EXPECT_EQ(fake_.StateOf(pid), cuda::CU_PROCESS_STATE_CHECKPOINTED);
  const int count = std::stoi(ReadFile(counter_));

  Result<int> restored = snapshotter_->Restore(images_, RestoreMode::kLazy);
  ASSERT_TRUE(restored.ok()) << restored.status().ToString();
  EXPECT_EQ(*restored, pid);
  EXPECT_EQ(fake_.Actions(),
            (std::vector<std::string>{"init", "lock", "checkpoint", "restore", "unlock"}));
  EXPECT_EQ(fake_.StateOf(pid), cuda::CU_PROCESS_STATE_RUNNING);
  EXPECT_TRUE(CountsPast(counter_, count + 2)) << "the restored process does not run";
}

TEST_F(CriuCudaTest, ProcessWithoutCudaIsDumpedWithoutGpuCalls) {
  const int pid = StartLoop(/*cuda=*/false);
  ASSERT_GT(pid, 0);
  Status s = snapshotter_->Dump(pid, images_, /*leave_running=*/true);
  ASSERT_TRUE(s.ok()) << s.ToString();
  EXPECT_EQ(fake_.Actions(), std::vector<std::string>{"init"});
  EXPECT_TRUE(fake_.Find("state").has_value());
  EXPECT_FALSE(fs::exists(Marker()));
  EXPECT_TRUE(fs::exists(images_ + "/inventory.img"));
}

TEST_F(CriuCudaTest, StoppedProcessWithCudaIsRefusedUntouched) {
  const int pid = StartLoop(/*cuda=*/true);
  ASSERT_GT(pid, 0);
  ASSERT_EQ(kill(pid, SIGSTOP), 0);
  ASSERT_TRUE(WaitFor(pid, WUNTRACED, 5000).has_value());
  Status s = snapshotter_->Dump(pid, images_, /*leave_running=*/true);
  EXPECT_EQ(s.code(), Code::kFailedPrecondition) << s.ToString();
  EXPECT_TRUE(Contains(s.message(), "is stopped")) << s.message();
  EXPECT_EQ(fake_.Actions(), std::vector<std::string>{"init"});
  EXPECT_FALSE(fs::exists(images_ + "/inventory.img"));
  EXPECT_EQ(ProcState(pid), 'T');
  EXPECT_EQ(fake_.StateOf(pid), cuda::CU_PROCESS_STATE_RUNNING);
}

TEST_F(CriuCudaTest, FailedSuspendFailsTheDumpAndLeavesTheProcessRunning) {
  const int pid = StartLoop(/*cuda=*/true);
  ASSERT_GT(pid, 0);
  fake_.fail["lock"] = cuda::CUDA_ERROR_TIMEOUT;
  Status s = snapshotter_->Dump(pid, images_, /*leave_running=*/true);
  // A busy GPU: retry later (not DeadlineExceeded, which would say "kill it").
  EXPECT_EQ(s.code(), Code::kUnavailable) << s.ToString();
  EXPECT_TRUE(Contains(s.message(), "suspending its GPU state failed")) << s.message();
  EXPECT_TRUE(Contains(s.message(), "CUDA_ERROR_TIMEOUT")) << s.message();
  EXPECT_EQ(fake_.Actions(), (std::vector<std::string>{"init", "lock"}));
  EXPECT_FALSE(fs::exists(images_ + "/inventory.img"));
  const int now = std::stoi(ReadFile(counter_));
  EXPECT_TRUE(CountsPast(counter_, now + 2));
}

TEST_F(CriuCudaTest, FailedResumeAfterLeaveRunningDumpDiscardsTheImage) {
  const int pid = StartLoop(/*cuda=*/true);
  ASSERT_GT(pid, 0);
  fake_.fail["restore"] = cuda::CUDA_ERROR_ILLEGAL_STATE;
  Status s = snapshotter_->Dump(pid, images_, /*leave_running=*/true);
  EXPECT_EQ(s.code(), Code::kInternal) << s.ToString();
  EXPECT_TRUE(Contains(s.message(), "kill it")) << s.message();
  EXPECT_FALSE(fs::exists(images_ + "/inventory.img"));
  EXPECT_FALSE(fs::exists(Marker()));
}

TEST_F(CriuCudaTest, FailedResumeAfterRestoreKillsTheRestoredProcess) {
  const int pid = StartLoop(/*cuda=*/true);
  ASSERT_GT(pid, 0);
  ASSERT_TRUE(snapshotter_->Dump(pid, images_, /*leave_running=*/false).ok());
  ASSERT_TRUE(WaitFor(pid, 0, 5000).has_value());
  fake_.fail["restore"] = cuda::CUDA_ERROR_ILLEGAL_STATE;
  Result<int> restored = snapshotter_->Restore(images_, RestoreMode::kFull);
  EXPECT_EQ(restored.status().code(), Code::kFailedPrecondition) << restored.status().ToString();
  EXPECT_TRUE(Contains(restored.status().message(), "so it was killed"))
      << restored.status().message();
  EXPECT_TRUE(kill(pid, 0) != 0 && errno == ESRCH) << "the restored process is still there";
}

TEST_F(CriuCudaTest, MarkedImageNeedsACheckpointer) {
  const int pid = StartLoop(/*cuda=*/true);
  ASSERT_GT(pid, 0);
  ASSERT_TRUE(snapshotter_->Dump(pid, images_, /*leave_running=*/false).ok());
  ASSERT_TRUE(WaitFor(pid, 0, 5000).has_value());
  Result<int> restored = NewCriuSnapshotter(criu_)->Restore(images_, RestoreMode::kFull);
  EXPECT_EQ(restored.status().code(), Code::kFailedPrecondition) << restored.status().ToString();
  EXPECT_TRUE(Contains(restored.status().message(), kCudaSuspendedMarker))
      << restored.status().message();
  EXPECT_TRUE(kill(pid, 0) != 0 && errno == ESRCH) << "something was restored";
}

}  // namespace
}  // namespace gantry::agent
