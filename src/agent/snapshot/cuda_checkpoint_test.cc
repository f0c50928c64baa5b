// Tests of the CudaCheckpointer against a fake CUDA driver (a table of plain functions that
// model the driver's process states and record every call), of the real one on a machine without
// libcuda.so.1, and of its use by the CRIU snapshotter: real CRIU dumps and restores of a small
// process (no CUDA in it) that the fake driver reports as holding a CUDA context. The CRIU tests
// need CRIU >= 4.1 and root, like snapshot_test.
#include "agent/snapshot/cuda_checkpoint.h"

#include <dlfcn.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <spawn.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "agent/snapshot/criu.h"
#include "agent/snapshot/test_processes.h"

namespace gantry::agent {
namespace {

using test_processes::ProcState;
using test_processes::ReadFile;
using test_processes::Spawn;
using test_processes::WaitFor;

namespace fs = std::filesystem;
using cuda::CUresult;
using std::chrono::milliseconds;
using std::chrono::steady_clock;

// --- The fake driver -------------------------------------------------------------------------

struct Call {
  std::string name;  // "init", "state", "lock", "checkpoint", "restore", "unlock"
  int pid = 0;
  bool watched_exists = false;  // whether FakeDriver::watch existed at the time of the call
};

// What the fake functions read and write. One at a time (the functions are plain C functions,
// so they reach it through a global); tests reset it in SetUp.
struct FakeDriver {
  std::mutex mu;
  int version = 12080;
  CUresult init_result = cuda::CUDA_SUCCESS;
  std::map<int, cuda::CUprocessState> states;  // pids the driver knows; others get an error
  int raw_state_override = -1;                 // >= 0: GetState reports this number
  std::map<std::string, CUresult> fail;        // call name -> result it returns (no change)
  std::vector<Call> calls;
  unsigned last_lock_timeout = 0;
  bool lock_args_reserved_zero = true;
  std::string watch;

  void Record(const char* name, int pid) {
    std::error_code ec;
    calls.push_back({name, pid, !watch.empty() && fs::exists(watch, ec)});
  }
  // The names of the calls, except "state" queries, in order.
  std::vector<std::string> Actions() {
    std::lock_guard<std::mutex> lock(mu);
    std::vector<std::string> out;
    for (const Call& c : calls) {
      if (c.name != "state") out.push_back(c.name);
    }
    return out;
  }
  std::optional<Call> Find(const std::string& name) {
    std::lock_guard<std::mutex> lock(mu);
    for (const Call& c : calls) {
      if (c.name == name) return c;
    }
    return std::nullopt;
  }
  cuda::CUprocessState StateOf(int pid) {
    std::lock_guard<std::mutex> lock(mu);
    return states.at(pid);
  }
};
FakeDriver* g_fake = nullptr;

CUresult FakeInit(unsigned flags) {
  std::lock_guard<std::mutex> lock(g_fake->mu);
  g_fake->Record("init", static_cast<int>(flags));
  return g_fake->init_result;
}
CUresult FakeDriverGetVersion(int* version) {
  *version = g_fake->version;
  return cuda::CUDA_SUCCESS;
}
// Like the real ones: known codes only, CUDA_ERROR_INVALID_VALUE for others.
CUresult FakeGetErrorName(CUresult error, const char** str) {
  switch (error) {
    case cuda::CUDA_ERROR_ILLEGAL_STATE:
      *str = "CUDA_ERROR_ILLEGAL_STATE";
      return cuda::CUDA_SUCCESS;
    case cuda::CUDA_ERROR_TIMEOUT:
      *str = "CUDA_ERROR_TIMEOUT";
      return cuda::CUDA_SUCCESS;
    case cuda::CUDA_ERROR_NO_DEVICE:
      *str = "CUDA_ERROR_NO_DEVICE";
      return cuda::CUDA_SUCCESS;
    case cuda::CUDA_ERROR_INVALID_VALUE:
      *str = "CUDA_ERROR_INVALID_VALUE";
      return cuda::CUDA_SUCCESS;
    default:
      *str = nullptr;
      return cuda::CUDA_ERROR_INVALID_VALUE;
  }
}
CUresult FakeGetErrorString(CUresult error, const char** str) {
  switch (error) {
    case cuda::CUDA_ERROR_ILLEGAL_STATE:
      *str = "fake: operation not valid in this state";
      return cuda::CUDA_SUCCESS;
    case cuda::CUDA_ERROR_TIMEOUT:
      *str = "fake: the timeout has lapsed";
      return cuda::CUDA_SUCCESS;
    case cuda::CUDA_ERROR_NO_DEVICE:
      *str = "fake: no CUDA-capable device is detected";
      return cuda::CUDA_SUCCESS;
    default:
      *str = nullptr;
      return cuda::CUDA_ERROR_INVALID_VALUE;
  }
}
CUresult FakeGetState(int pid, cuda::CUprocessState* state) {
  std::lock_guard<std::mutex> lock(g_fake->mu);
  g_fake->Record("state", pid);
  if (g_fake->raw_state_override >= 0) {
    *state = static_cast<cuda::CUprocessState>(g_fake->raw_state_override);
    return cuda::CUDA_SUCCESS;
  }
  auto it = g_fake->states.find(pid);
  if (it == g_fake->states.end()) return cuda::CUDA_ERROR_INVALID_VALUE;
  *state = it->second;
  return cuda::CUDA_SUCCESS;
}
CUresult FakeGetRestoreThreadId(int pid, int* tid) {
  *tid = pid;
  return cuda::CUDA_SUCCESS;
}
// A transition from `from` to `to`, or the configured failure, or ILLEGAL_STATE.
CUresult Transition(const char* name, int pid, cuda::CUprocessState from, cuda::CUprocessState to) {
  g_fake->Record(name, pid);
  if (auto f = g_fake->fail.find(name); f != g_fake->fail.end()) return f->second;
  auto it = g_fake->states.find(pid);
  if (it == g_fake->states.end()) return cuda::CUDA_ERROR_INVALID_VALUE;
  if (it->second != from) return cuda::CUDA_ERROR_ILLEGAL_STATE;
  it->second = to;
  return cuda::CUDA_SUCCESS;
}
CUresult FakeLock(int pid, cuda::CUcheckpointLockArgs* args) {
  std::lock_guard<std::mutex> lock(g_fake->mu);
  g_fake->last_lock_timeout = args ? args->timeoutMs : 0;
  if (args) {
    bool zero = args->reserved0 == 0;
    for (uint64_t r : args->reserved1) zero = zero && r == 0;
    g_fake->lock_args_reserved_zero = zero;
  }
  return Transition("lock", pid, cuda::CU_PROCESS_STATE_RUNNING, cuda::CU_PROCESS_STATE_LOCKED);
}
CUresult FakeCheckpoint(int pid, cuda::CUcheckpointCheckpointArgs* args) {
  std::lock_guard<std::mutex> lock(g_fake->mu);
  return Transition("checkpoint", pid, cuda::CU_PROCESS_STATE_LOCKED,
                    cuda::CU_PROCESS_STATE_CHECKPOINTED);
}
CUresult FakeRestore(int pid, cuda::CUcheckpointRestoreArgs* args) {
  std::lock_guard<std::mutex> lock(g_fake->mu);
  return Transition("restore", pid, cuda::CU_PROCESS_STATE_CHECKPOINTED,
                    cuda::CU_PROCESS_STATE_LOCKED);
}
CUresult FakeUnlock(int pid, cuda::CUcheckpointUnlockArgs* args) {
  std::lock_guard<std::mutex> lock(g_fake->mu);
  return Transition("unlock", pid, cuda::CU_PROCESS_STATE_LOCKED, cuda::CU_PROCESS_STATE_RUNNING);
}

cuda::CudaDriverApi FakeApi() {
  cuda::CudaDriverApi api;
  api.cuInit = FakeInit;
  api.cuDriverGetVersion = FakeDriverGetVersion;
  api.cuGetErrorName = FakeGetErrorName;
  api.cuGetErrorString = FakeGetErrorString;
  api.cuCheckpointProcessGetState = FakeGetState;
  api.cuCheckpointProcessGetRestoreThreadId = FakeGetRestoreThreadId;
  api.cuCheckpointProcessLock = FakeLock;
  api.cuCheckpointProcessCheckpoint = FakeCheckpoint;
  api.cuCheckpointProcessRestore = FakeRestore;
  api.cuCheckpointProcessUnlock = FakeUnlock;
  return api;
}

bool Contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

class CudaCheckpointerTest : public ::testing::Test {
 protected:
  void SetUp() override { g_fake = &fake_; }
  void TearDown() override { g_fake = nullptr; }
  FakeDriver fake_;
  const int pid_ = getpid();  // a live process without /dev/nvidia* mappings
};

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
