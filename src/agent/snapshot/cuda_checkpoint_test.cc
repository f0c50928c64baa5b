// Tests of the CudaCheckpointer against a fake CUDA driver (fake_cuda_driver.h), and of the real
// one on a machine without libcuda.so.1. Its use by the CRIU snapshotter is tested in
// criu_cuda_test.cc.
#include "agent/snapshot/cuda_checkpoint.h"

#include <dlfcn.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <string>
#include <vector>

#include "agent/snapshot/fake_cuda_driver.h"

namespace gantry::agent {
namespace {

using fake_cuda::Contains;
using fake_cuda::CudaCheckpointerTest;
using fake_cuda::FakeApi;

// --- The checkpointer against the fake driver -------------------------------------------------

TEST_F(CudaCheckpointerTest, AvailableWithA128DriverInitialisesOnce) {
  auto c = NewCudaCheckpointer(FakeApi());
  Status s = c->Available();
  EXPECT_TRUE(s.ok()) << s.ToString();
  EXPECT_TRUE(c->Available().ok());
  EXPECT_EQ(fake_.Actions(), std::vector<std::string>{"init"});
}

TEST_F(CudaCheckpointerTest, OldDriverIsFailedPrecondition) {
  fake_.version = 12040;
  Status s = NewCudaCheckpointer(FakeApi())->Available();
  EXPECT_EQ(s.code(), Code::kFailedPrecondition) << s.ToString();
  EXPECT_TRUE(Contains(s.message(), "12040")) << s.message();
  EXPECT_TRUE(Contains(s.message(), "12080")) << s.message();
  EXPECT_TRUE(Contains(s.message(), "570")) << s.message();
}

TEST_F(CudaCheckpointerTest, MissingSymbolIsNamed) {
  cuda::CudaDriverApi api = FakeApi();
  api.cuCheckpointProcessUnlock = nullptr;
  api.cuCheckpointProcessRestore = nullptr;
  auto c = NewCudaCheckpointer(api);
  Status s = c->Available();
  EXPECT_EQ(s.code(), Code::kFailedPrecondition) << s.ToString();
  EXPECT_TRUE(Contains(s.message(), "cuCheckpointProcessRestore, cuCheckpointProcessUnlock"))
      << s.message();
  // Every other call says the same instead of calling through a null pointer.
  EXPECT_EQ(c->State(pid_).status().code(), Code::kFailedPrecondition);
  EXPECT_EQ(c->Resume(pid_).code(), Code::kFailedPrecondition);
}

TEST_F(CudaCheckpointerTest, FailedInitQuotesTheDriver) {
  fake_.init_result = cuda::CUDA_ERROR_NO_DEVICE;
  Status s = NewCudaCheckpointer(FakeApi())->Available();
  EXPECT_EQ(s.code(), Code::kFailedPrecondition) << s.ToString();
  EXPECT_TRUE(Contains(s.message(), "cuInit: CUDA_ERROR_NO_DEVICE (100): fake: no CUDA-capable"))
      << s.message();
}

TEST_F(CudaCheckpointerTest, MissingLibcudaIsFailedPreconditionEverywhere) {
  cuda::CudaDriverApi api = LoadCudaDriverApi("libgantry-test-no-such-cuda.so.1");
  EXPECT_TRUE(Contains(api.load_error, "libgantry-test-no-such-cuda.so.1")) << api.load_error;
  EXPECT_EQ(api.cuInit, nullptr);
  EXPECT_EQ(api.cuCheckpointProcessLock, nullptr);
  auto c = NewCudaCheckpointer(api);
  Status s = c->Available();
  EXPECT_EQ(s.code(), Code::kFailedPrecondition) << s.ToString();
  EXPECT_TRUE(Contains(s.message(), "no libcuda.so.1")) << s.message();
  EXPECT_EQ(c->State(pid_).status().code(), Code::kFailedPrecondition);
  EXPECT_EQ(c->Suspend(pid_, 1000).code(), Code::kFailedPrecondition);
  EXPECT_EQ(c->Resume(pid_).code(), Code::kFailedPrecondition);
}

// The real driver where there is none (this project's build machines): a clean "no".
TEST_F(CudaCheckpointerTest, RealCheckpointerWithoutLibcuda) {
  if (void* lib = dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL); lib != nullptr) {
    dlclose(lib);
    GTEST_SKIP() << "libcuda.so.1 is installed here";
  }
  auto c = NewCudaCheckpointer();
  Status s = c->Available();
  EXPECT_EQ(s.code(), Code::kFailedPrecondition) << s.ToString();
  EXPECT_TRUE(Contains(s.message(), "no libcuda.so.1")) << s.message();
  EXPECT_EQ(c->State(pid_).status().code(), Code::kFailedPrecondition);
}

TEST_F(CudaCheckpointerTest, StateMapsTheDriverStates) {
  auto c = NewCudaCheckpointer(FakeApi());
  const std::pair<cuda::CUprocessState, ProcessGpuState> cases[] = {
      {cuda::CU_PROCESS_STATE_RUNNING, ProcessGpuState::kRunning},
      {cuda::CU_PROCESS_STATE_LOCKED, ProcessGpuState::kLocked},
      {cuda::CU_PROCESS_STATE_CHECKPOINTED, ProcessGpuState::kCheckpointed},
      {cuda::CU_PROCESS_STATE_FAILED, ProcessGpuState::kFailed},
  };
  for (const auto& [driver, want] : cases) {
    fake_.states[pid_] = driver;
    Result<ProcessGpuState> got = c->State(pid_);
    ASSERT_TRUE(got.ok()) << got.status().ToString();
    EXPECT_EQ(*got, want) << ProcessGpuStateName(want);
  }
  // CUDA 13's CHECKPOINTING: an operation in progress; retry.
  fake_.raw_state_override = 4;
  EXPECT_EQ(c->State(pid_).status().code(), Code::kUnavailable);
}

TEST_F(CudaCheckpointerTest, ProcessUnknownToTheDriverHasNone) {
  auto c = NewCudaCheckpointer(FakeApi());
  Result<ProcessGpuState> got = c->State(pid_);  // the fake answers INVALID_VALUE
  ASSERT_TRUE(got.ok()) << got.status().ToString();
  EXPECT_EQ(*got, ProcessGpuState::kNone);
  EXPECT_EQ(c->State(0).status().code(), Code::kInvalidArgument);
}

TEST_F(CudaCheckpointerTest, StateOfMissingProcessIsNotFound) {
  const int pid = fork();
  if (pid == 0) _exit(0);
  ASSERT_GT(pid, 0);
  ASSERT_EQ(waitpid(pid, nullptr, 0), pid);
  Result<ProcessGpuState> got = NewCudaCheckpointer(FakeApi())->State(pid);
  EXPECT_EQ(got.status().code(), Code::kNotFound) << got.status().ToString();
}

TEST_F(CudaCheckpointerTest, SuspendLocksWithTheTimeoutThenCheckpoints) {
  fake_.states[pid_] = cuda::CU_PROCESS_STATE_RUNNING;
  auto c = NewCudaCheckpointer(FakeApi());
  Status s = c->Suspend(pid_, 1234);
  ASSERT_TRUE(s.ok()) << s.ToString();
  EXPECT_EQ(fake_.Actions(), (std::vector<std::string>{"init", "lock", "checkpoint"}));
  EXPECT_EQ(fake_.last_lock_timeout, 1234u);
  EXPECT_TRUE(fake_.lock_args_reserved_zero);
  EXPECT_EQ(fake_.StateOf(pid_), cuda::CU_PROCESS_STATE_CHECKPOINTED);
  ASSERT_TRUE(fake_.Find("lock").has_value());
  EXPECT_EQ(fake_.Find("lock")->pid, pid_);

  // Suspended already: nothing more to do.
  EXPECT_TRUE(c->Suspend(pid_, 1234).ok());
  EXPECT_EQ(fake_.Actions().size(), 3u);
}

TEST_F(CudaCheckpointerTest, ResumeRestoresThenUnlocks) {
  fake_.states[pid_] = cuda::CU_PROCESS_STATE_CHECKPOINTED;
  auto c = NewCudaCheckpointer(FakeApi());
  Status s = c->Resume(pid_);
  ASSERT_TRUE(s.ok()) << s.ToString();
  EXPECT_EQ(fake_.Actions(), (std::vector<std::string>{"init", "restore", "unlock"}));
  EXPECT_EQ(fake_.StateOf(pid_), cuda::CU_PROCESS_STATE_RUNNING);
  EXPECT_TRUE(c->Resume(pid_).ok());  // running already
  EXPECT_EQ(fake_.Actions().size(), 3u);
}

TEST_F(CudaCheckpointerTest, LockedProcessIsOnlyUnlockedOrOnlyCheckpointed) {
  auto c = NewCudaCheckpointer(FakeApi());
  fake_.states[pid_] = cuda::CU_PROCESS_STATE_LOCKED;
  ASSERT_TRUE(c->Resume(pid_).ok());
  fake_.states[pid_] = cuda::CU_PROCESS_STATE_LOCKED;
  ASSERT_TRUE(c->Suspend(pid_, 10).ok());
  EXPECT_EQ(fake_.Actions(), (std::vector<std::string>{"init", "unlock", "checkpoint"}));
}

TEST_F(CudaCheckpointerTest, LockTimeoutIsDeadlineExceededAndLeavesItRunning) {
  fake_.states[pid_] = cuda::CU_PROCESS_STATE_RUNNING;
  fake_.fail["lock"] = cuda::CUDA_ERROR_TIMEOUT;
  Status s = NewCudaCheckpointer(FakeApi())->Suspend(pid_, 50);
  EXPECT_EQ(s.code(), Code::kDeadlineExceeded) << s.ToString();
  EXPECT_TRUE(
      Contains(s.message(), "cuCheckpointProcessLock(pid " + std::to_string(pid_) +
                                "): CUDA_ERROR_TIMEOUT (909): fake: the timeout has lapsed"))
      << s.message();
  EXPECT_TRUE(Contains(s.message(), "timeout 50 ms")) << s.message();
  EXPECT_TRUE(Contains(s.message(), "its GPU state is now running")) << s.message();
  EXPECT_EQ(fake_.Actions(), (std::vector<std::string>{"init", "lock"}));
}

TEST_F(CudaCheckpointerTest, FailedCheckpointUnlocksAgain) {
  fake_.states[pid_] = cuda::CU_PROCESS_STATE_RUNNING;
  fake_.fail["checkpoint"] = cuda::CUDA_ERROR_ILLEGAL_STATE;
  Status s = NewCudaCheckpointer(FakeApi())->Suspend(pid_, 1000);
  EXPECT_EQ(s.code(), Code::kFailedPrecondition) << s.ToString();
  EXPECT_TRUE(Contains(s.message(), "cuCheckpointProcessCheckpoint(pid " + std::to_string(pid_) +
                                        "): CUDA_ERROR_ILLEGAL_STATE (401)"))
      << s.message();
  EXPECT_TRUE(Contains(s.message(), "unlocked it again")) << s.message();
  EXPECT_TRUE(Contains(s.message(), "now running")) << s.message();
  EXPECT_EQ(fake_.Actions(), (std::vector<std::string>{"init", "lock", "checkpoint", "unlock"}));
}

TEST_F(CudaCheckpointerTest, FailedRestoreSaysTheProcessStaysBlocked) {
  fake_.states[pid_] = cuda::CU_PROCESS_STATE_CHECKPOINTED;
  fake_.fail["restore"] = 999;  // CUDA_ERROR_UNKNOWN, which the fake cannot name
  Status s = NewCudaCheckpointer(FakeApi())->Resume(pid_);
  EXPECT_EQ(s.code(), Code::kInternal) << s.ToString();
  EXPECT_TRUE(Contains(
      s.message(), "cuCheckpointProcessRestore(pid " + std::to_string(pid_) + "): CUresult 999"))
      << s.message();
  EXPECT_TRUE(Contains(s.message(), "now checkpointed")) << s.message();
  EXPECT_EQ(fake_.Actions(), (std::vector<std::string>{"init", "restore"}));
}

TEST_F(CudaCheckpointerTest, ErrorsWithoutErrorStringFunctions) {
  cuda::CudaDriverApi api = FakeApi();
  api.cuGetErrorName = nullptr;
  api.cuGetErrorString = nullptr;
  fake_.states[pid_] = cuda::CU_PROCESS_STATE_RUNNING;
  fake_.fail["lock"] = cuda::CUDA_ERROR_ILLEGAL_STATE;
  Status s = NewCudaCheckpointer(api)->Suspend(pid_, 1000);
  EXPECT_EQ(s.code(), Code::kFailedPrecondition) << s.ToString();
  EXPECT_TRUE(Contains(s.message(), "CUresult 401")) << s.message();
}

TEST_F(CudaCheckpointerTest, BadArgumentsAndStates) {
  auto c = NewCudaCheckpointer(FakeApi());
  EXPECT_EQ(c->Suspend(pid_, 0).code(), Code::kInvalidArgument);
  EXPECT_EQ(c->Suspend(pid_, 1000).code(), Code::kFailedPrecondition);  // no CUDA context
  EXPECT_EQ(c->Resume(pid_).code(), Code::kFailedPrecondition);
  fake_.states[pid_] = cuda::CU_PROCESS_STATE_FAILED;
  EXPECT_EQ(c->Suspend(pid_, 1000).code(), Code::kFailedPrecondition);
  EXPECT_EQ(c->Resume(pid_).code(), Code::kFailedPrecondition);
  EXPECT_EQ(fake_.Actions(), std::vector<std::string>{"init"});
}

}  // namespace
}  // namespace gantry::agent
