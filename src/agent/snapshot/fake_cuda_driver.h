#pragma once
// A fake CUDA driver for the CudaCheckpointer's tests (cuda_checkpoint_test.cc,
// criu_cuda_test.cc): a table of plain functions that model the driver's process states and
// record every call, and the fixture that installs it. Test-only; header-only.

#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdint>
#include <filesystem>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <system_error>
#include <vector>

#include "agent/snapshot/cuda_checkpoint.h"

namespace gantry::agent::fake_cuda {

using cuda::CUresult;

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
    calls.push_back({name, pid, !watch.empty() && std::filesystem::exists(watch, ec)});
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
inline FakeDriver* g_fake = nullptr;

inline CUresult FakeInit(unsigned flags) {
  std::lock_guard<std::mutex> lock(g_fake->mu);
  g_fake->Record("init", static_cast<int>(flags));
  return g_fake->init_result;
}
inline CUresult FakeDriverGetVersion(int* version) {
  *version = g_fake->version;
  return cuda::CUDA_SUCCESS;
}
// Like the real ones: known codes only, CUDA_ERROR_INVALID_VALUE for others.
inline CUresult FakeGetErrorName(CUresult error, const char** str) {
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
inline CUresult FakeGetErrorString(CUresult error, const char** str) {
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
inline CUresult FakeGetState(int pid, cuda::CUprocessState* state) {
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
inline CUresult FakeGetRestoreThreadId(int pid, int* tid) {
  *tid = pid;
  return cuda::CUDA_SUCCESS;
}
// A transition from `from` to `to`, or the configured failure, or ILLEGAL_STATE.
inline CUresult Transition(const char* name, int pid, cuda::CUprocessState from,
                           cuda::CUprocessState to) {
  g_fake->Record(name, pid);
  if (auto f = g_fake->fail.find(name); f != g_fake->fail.end()) return f->second;
  auto it = g_fake->states.find(pid);
  if (it == g_fake->states.end()) return cuda::CUDA_ERROR_INVALID_VALUE;
  if (it->second != from) return cuda::CUDA_ERROR_ILLEGAL_STATE;
  it->second = to;
  return cuda::CUDA_SUCCESS;
}
inline CUresult FakeLock(int pid, cuda::CUcheckpointLockArgs* args) {
  std::lock_guard<std::mutex> lock(g_fake->mu);
  g_fake->last_lock_timeout = args ? args->timeoutMs : 0;
  if (args) {
    bool zero = args->reserved0 == 0;
    for (uint64_t r : args->reserved1) zero = zero && r == 0;
    g_fake->lock_args_reserved_zero = zero;
  }
  return Transition("lock", pid, cuda::CU_PROCESS_STATE_RUNNING, cuda::CU_PROCESS_STATE_LOCKED);
}
inline CUresult FakeCheckpoint(int pid, cuda::CUcheckpointCheckpointArgs* args) {
  std::lock_guard<std::mutex> lock(g_fake->mu);
  return Transition("checkpoint", pid, cuda::CU_PROCESS_STATE_LOCKED,
                    cuda::CU_PROCESS_STATE_CHECKPOINTED);
}
inline CUresult FakeRestore(int pid, cuda::CUcheckpointRestoreArgs* args) {
  std::lock_guard<std::mutex> lock(g_fake->mu);
  return Transition("restore", pid, cuda::CU_PROCESS_STATE_CHECKPOINTED,
                    cuda::CU_PROCESS_STATE_LOCKED);
}
inline CUresult FakeUnlock(int pid, cuda::CUcheckpointUnlockArgs* args) {
  std::lock_guard<std::mutex> lock(g_fake->mu);
  return Transition("unlock", pid, cuda::CU_PROCESS_STATE_LOCKED, cuda::CU_PROCESS_STATE_RUNNING);
}

inline cuda::CudaDriverApi FakeApi() {
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

inline bool Contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

class CudaCheckpointerTest : public ::testing::Test {
 protected:
  void SetUp() override { g_fake = &fake_; }
  void TearDown() override { g_fake = nullptr; }
  FakeDriver fake_;
  const int pid_ = getpid();  // a live process without /dev/nvidia* mappings
};

}  // namespace gantry::agent::fake_cuda
