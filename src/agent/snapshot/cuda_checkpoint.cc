// The CudaCheckpointer over the CUDA driver's checkpoint API. See cuda_checkpoint.h.
//
// Where the driver API facts come from (no cuda.h here; nothing was run against a GPU):
// - Signatures of cuCheckpointProcess{GetState,GetRestoreThreadId,Lock,Checkpoint,Restore,
//   Unlock}: CUDA Driver API reference, "CUDA Checkpointing" (group__CUDA__CHECKPOINT.html, 12.8
//   and 13.x list the same six signatures, all `(int pid, <T>* )` returning CUresult).
// - Their contracts used below: Lock "Process must be in the RUNNING state in order to lock ...
//   If timeoutMs is specified and the timeout is reached the process will be left in the RUNNING
//   state"; Checkpoint "Process must be in the LOCKED state ... Upon successful return the
//   process will be in the CHECKPOINTED state"; Restore then Unlock return it to RUNNING (same
//   page; NVIDIA/cuda-checkpoint README, "570 Features").
// - CUprocessState values and CUresult numbers: cuda.h of CUDA 12.x (CUDA_ERROR_ILLEGAL_STATE =
//   401, CUDA_ERROR_NOT_SUPPORTED = 801, CUDA_ERROR_TIMEOUT = 909, ...).
// - That the driver needs the target's restore thread to run: CRIU's CUDA plugin
//   (criu/plugins/cuda/cuda_plugin.c) PTRACE_CONTs that thread around `checkpoint` and
//   `restore` while CRIU holds the process frozen, and locks before it freezes it.
#include "agent/snapshot/cuda_checkpoint.h"

#include <dlfcn.h>
#include <signal.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <fstream>
#include <mutex>
#include <optional>
#include <string>
#include <type_traits>
#include <utility>

namespace gantry::agent {

using cuda::CudaDriverApi;
using cuda::CUresult;

const char* ProcessGpuStateName(ProcessGpuState state) {
  switch (state) {
    case ProcessGpuState::kNone:
      return "none";
    case ProcessGpuState::kRunning:
      return "running";
    case ProcessGpuState::kLocked:
      return "locked";
    case ProcessGpuState::kCheckpointed:
      return "checkpointed";
    case ProcessGpuState::kFailed:
      return "failed";
  }
  return "?";
}

cuda::CudaDriverApi LoadCudaDriverApi(const std::string& library) {
  CudaDriverApi api;
  void* lib = dlopen(library.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (lib == nullptr) {
    const char* why = dlerror();
    api.load_error = "cannot load " + library + ": " + (why ? why : "unknown dlopen error");
    return api;
  }
  // Never dlclose()d: libcuda keeps threads and state that outlive any handle.
  auto sym = [lib](auto& fn, const char* name) {
    fn = reinterpret_cast<std::remove_reference_t<decltype(fn)>>(dlsym(lib, name));
  };
  sym(api.cuInit, "cuInit");
  sym(api.cuDriverGetVersion, "cuDriverGetVersion");
  sym(api.cuGetErrorName, "cuGetErrorName");
  sym(api.cuGetErrorString, "cuGetErrorString");
  sym(api.cuCheckpointProcessGetState, "cuCheckpointProcessGetState");
  sym(api.cuCheckpointProcessGetRestoreThreadId, "cuCheckpointProcessGetRestoreThreadId");
  sym(api.cuCheckpointProcessLock, "cuCheckpointProcessLock");
  sym(api.cuCheckpointProcessCheckpoint, "cuCheckpointProcessCheckpoint");
  sym(api.cuCheckpointProcessRestore, "cuCheckpointProcessRestore");
  sym(api.cuCheckpointProcessUnlock, "cuCheckpointProcessUnlock");
  return api;
}

namespace {

// True if /proc/<pid>/maps shows a mapping of an NVIDIA device file (/dev/nvidia0,
// /dev/nvidiactl, /dev/nvidia-uvm): the process talks to the GPU driver directly.
bool MapsNvidiaDevice(int pid) {
  std::ifstream maps("/proc/" + std::to_string(pid) + "/maps");
  std::string line;
  while (std::getline(maps, line)) {
    if (line.find(" /dev/nvidia") != std::string::npos) return true;
  }
  return false;
}

bool ProcessExists(int pid) { return kill(pid, 0) == 0 || errno != ESRCH; }

class DriverCudaCheckpointer final : public CudaCheckpointer {
 public:
  explicit DriverCudaCheckpointer(CudaDriverApi api) : api_(std::move(api)) {}

  Status Available() override;
  Result<ProcessGpuState> State(int pid) override;
  Status Suspend(int pid, int64_t timeout_ms) override;
  Status Resume(int pid) override;

 private:
  // Available(), computed once.
  Status CheckDriver();
  // "cuFoo(pid 12): CUDA_ERROR_X (n): text" as a Status whose code says what to do.
  Status DriverError(const char* call, int pid, CUresult r) const;
  std::string Describe(CUresult r) const;
  // State(), or a note on why it is unknown, for error messages.
  std::string StateNote(int pid);

  const CudaDriverApi api_;
  std::once_flag once_;
  Status available_;  // written once under once_
};

Status DriverCudaCheckpointer::Available() {
  std::call_once(once_, [this] { available_ = CheckDriver(); });
  return available_;
}

Status DriverCudaCheckpointer::CheckDriver() {
  if (!api_.load_error.empty()) {
    return FailedPrecondition("CUDA checkpoints unavailable: no libcuda.so.1 (" + api_.load_error +
                              "); they need an NVIDIA driver >= 570");
  }
  const std::pair<const char*, bool> symbols[] = {
      {"cuInit", api_.cuInit != nullptr},
      {"cuDriverGetVersion", api_.cuDriverGetVersion != nullptr},
      {"cuCheckpointProcessGetState", api_.cuCheckpointProcessGetState != nullptr},
      {"cuCheckpointProcessGetRestoreThreadId",
       api_.cuCheckpointProcessGetRestoreThreadId != nullptr},
      {"cuCheckpointProcessLock", api_.cuCheckpointProcessLock != nullptr},
      {"cuCheckpointProcessCheckpoint", api_.cuCheckpointProcessCheckpoint != nullptr},
      {"cuCheckpointProcessRestore", api_.cuCheckpointProcessRestore != nullptr},
      {"cuCheckpointProcessUnlock", api_.cuCheckpointProcessUnlock != nullptr},
  };
  std::string missing;
  for (const auto& [name, present] : symbols) {
    if (!present) missing += (missing.empty() ? "" : ", ") + std::string(name);
  }
  if (!missing.empty()) {
    return FailedPrecondition("CUDA checkpoints unavailable: libcuda.so.1 lacks " + missing +
                              " (the checkpoint API needs an NVIDIA driver >= 570)");
  }
  int version = 0;
  if (CUresult r = api_.cuDriverGetVersion(&version); r != cuda::CUDA_SUCCESS) {
    return FailedPrecondition("CUDA checkpoints unavailable: cuDriverGetVersion: " + Describe(r));
  }
  if (version < cuda::kMinCheckpointDriverVersion) {
    return FailedPrecondition(
        "CUDA checkpoints unavailable: the driver supports CUDA " + std::to_string(version / 1000) +
        "." + std::to_string(version % 1000 / 10) + " (" + std::to_string(version) +
        "); the checkpoint API needs >= 12.8 (" +
        std::to_string(cuda::kMinCheckpointDriverVersion) + ", driver 570 or newer)");
  }
  // cuInit opens the driver (not a context, no GPU memory); the checkpoint calls report
  // CUDA_ERROR_NOT_INITIALIZED without it.
  if (CUresult r = api_.cuInit(0); r != cuda::CUDA_SUCCESS) {
    return FailedPrecondition("CUDA checkpoints unavailable: cuInit: " + Describe(r));
  }
  return Status::Ok();
}

std::string DriverCudaCheckpointer::Describe(CUresult r) const {
  const char* name = nullptr;
  const char* text = nullptr;
  if (api_.cuGetErrorName == nullptr || api_.cuGetErrorName(r, &name) != cuda::CUDA_SUCCESS) {
    name = nullptr;
  }
  if (api_.cuGetErrorString == nullptr || api_.cuGetErrorString(r, &text) != cuda::CUDA_SUCCESS) {
    text = nullptr;
  }
  std::string out =
      name ? std::string(name) + " (" + std::to_string(r) + ")" : "CUresult " + std::to_string(r);
  if (text) out += ": " + std::string(text);
  return out;
}

Status DriverCudaCheckpointer::DriverError(const char* call, int pid, CUresult r) const {
  std::string what = std::string(call) + "(pid " + std::to_string(pid) + "): " + Describe(r);
  switch (r) {
    case cuda::CUDA_ERROR_INVALID_VALUE:
      return InvalidArgument(std::move(what));
    case cuda::CUDA_ERROR_OUT_OF_MEMORY:
      return ResourceExhausted(std::move(what));
    case cuda::CUDA_ERROR_NOT_INITIALIZED:
    case cuda::CUDA_ERROR_NO_DEVICE:
    case cuda::CUDA_ERROR_ILLEGAL_STATE:
    case cuda::CUDA_ERROR_NOT_SUPPORTED:
      return FailedPrecondition(std::move(what));
    case cuda::CUDA_ERROR_NOT_FOUND:
      return NotFound(std::move(what));
    case cuda::CUDA_ERROR_NOT_PERMITTED:
      return PermissionDenied(std::move(what));
    case cuda::CUDA_ERROR_NOT_READY:
    case cuda::CUDA_ERROR_TIMEOUT:
      return DeadlineExceeded(std::move(what));
    default:
      return Internal(std::move(what));
  }
}

Result<ProcessGpuState> DriverCudaCheckpointer::State(int pid) {
  if (pid <= 0) return InvalidArgument("CUDA checkpoint: bad pid " + std::to_string(pid));
  GANTRY_RETURN_IF_ERROR(Available());
  if (!ProcessExists(pid)) {
    return NotFound("CUDA checkpoint: no process " + std::to_string(pid));
  }
  cuda::CUprocessState state = cuda::CU_PROCESS_STATE_FAILED;
  const CUresult r = api_.cuCheckpointProcessGetState(pid, &state);
  if (r != cuda::CUDA_SUCCESS) {
    // The driver answers with an error for a process it has no CUDA state of (which error is
    // not documented). Such a process must not be talking to the GPU on its own either.
    if (!ProcessExists(pid)) return NotFound("CUDA checkpoint: no process " + std::to_string(pid));
    if (!MapsNvidiaDevice(pid)) return ProcessGpuState::kNone;
    return DriverError("cuCheckpointProcessGetState", pid, r);
  }
  switch (state) {
    case cuda::CU_PROCESS_STATE_RUNNING:
      return ProcessGpuState::kRunning;
    case cuda::CU_PROCESS_STATE_LOCKED:
      return ProcessGpuState::kLocked;
    case cuda::CU_PROCESS_STATE_CHECKPOINTED:
      return ProcessGpuState::kCheckpointed;
    case cuda::CU_PROCESS_STATE_FAILED:
      return ProcessGpuState::kFailed;
  }
  // CUDA 13 drivers add CHECKPOINTING (4) and RESTORING (5): an operation is in progress.
  if (state == 4 || state == 5) {
    return Unavailable("cuCheckpointProcessGetState(pid " + std::to_string(pid) + "): state " +
                       std::to_string(static_cast<int>(state)) +
                       " (a checkpoint or restore is in progress); retry");
  }
  return Internal("cuCheckpointProcessGetState(pid " + std::to_string(pid) + "): unknown state " +
                  std::to_string(static_cast<int>(state)));
}

std::string DriverCudaCheckpointer::StateNote(int pid) {
  Result<ProcessGpuState> s = State(pid);
  return s.ok() ? std::string("its GPU state is now ") + ProcessGpuStateName(*s)
                : "its GPU state is unknown (" + s.status().message() + ")";
}

Status DriverCudaCheckpointer::Suspend(int pid, int64_t timeout_ms) {
  if (timeout_ms <= 0) {
    return InvalidArgument("CUDA checkpoint: the lock timeout must be > 0 ms, not " +
                           std::to_string(timeout_ms));
  }
  Result<ProcessGpuState> state = State(pid);
  if (!state.ok()) return state.status();
  const std::string who = "pid " + std::to_string(pid);
  switch (*state) {
    case ProcessGpuState::kNone:
      return FailedPrecondition("CUDA checkpoint: " + who + " has no CUDA context to suspend");
    case ProcessGpuState::kFailed:
      return FailedPrecondition("CUDA checkpoint: the driver reports " + who +
                                " as failed (an earlier checkpoint or restore broke it)");
    case ProcessGpuState::kCheckpointed:
      return Status::Ok();
    case ProcessGpuState::kRunning: {
      cuda::CUcheckpointLockArgs args = {};
      args.timeoutMs = static_cast<unsigned>(std::min<int64_t>(timeout_ms, UINT_MAX));
      if (CUresult r = api_.cuCheckpointProcessLock(pid, &args); r != cuda::CUDA_SUCCESS) {
        Status s = DriverError("cuCheckpointProcessLock", pid, r);
        return Status(s.code(), "CUDA checkpoint: lock (timeout " + std::to_string(timeout_ms) +
                                    " ms) failed: " + s.message() + "; " + StateNote(pid));
      }
      break;
    }
    case ProcessGpuState::kLocked:
      break;
  }
  if (CUresult r = api_.cuCheckpointProcessCheckpoint(pid, nullptr); r != cuda::CUDA_SUCCESS) {
    Status s = DriverError("cuCheckpointProcessCheckpoint", pid, r);
    std::string what = "CUDA checkpoint: checkpoint failed: " + s.message();
    if (CUresult u = api_.cuCheckpointProcessUnlock(pid, nullptr); u != cuda::CUDA_SUCCESS) {
      what += "; unlocking it again failed too: " +
              DriverError("cuCheckpointProcessUnlock", pid, u).message() +
              " (its CUDA calls stay blocked: kill it)";
    } else {
      what += "; unlocked it again";
    }
    return Status(s.code(), what + "; " + StateNote(pid));
  }
  return Status::Ok();
}

Status DriverCudaCheckpointer::Resume(int pid) {
  Result<ProcessGpuState> state = State(pid);
  if (!state.ok()) return state.status();
  const std::string who = "pid " + std::to_string(pid);
  switch (*state) {
    case ProcessGpuState::kNone:
      return FailedPrecondition("CUDA checkpoint: " + who + " has no CUDA state to resume");
    case ProcessGpuState::kFailed:
      return FailedPrecondition("CUDA checkpoint: the driver reports " + who +
                                " as failed (an earlier checkpoint or restore broke it)");
    case ProcessGpuState::kRunning:
      return Status::Ok();
    case ProcessGpuState::kCheckpointed:
      if (CUresult r = api_.cuCheckpointProcessRestore(pid, nullptr); r != cuda::CUDA_SUCCESS) {
        Status s = DriverError("cuCheckpointProcessRestore", pid, r);
        return Status(s.code(),
                      "CUDA checkpoint: restore failed: " + s.message() + "; " + StateNote(pid));
      }
      break;
    case ProcessGpuState::kLocked:
      break;
  }
  if (CUresult r = api_.cuCheckpointProcessUnlock(pid, nullptr); r != cuda::CUDA_SUCCESS) {
    Status s = DriverError("cuCheckpointProcessUnlock", pid, r);
    return Status(s.code(),
                  "CUDA checkpoint: unlock failed: " + s.message() + "; " + StateNote(pid));
  }
  return Status::Ok();
}

}  // namespace

std::unique_ptr<CudaCheckpointer> NewCudaCheckpointer(cuda::CudaDriverApi api) {
  return std::make_unique<DriverCudaCheckpointer>(std::move(api));
}

std::unique_ptr<CudaCheckpointer> NewCudaCheckpointer() {
  return NewCudaCheckpointer(LoadCudaDriverApi());
}

}  // namespace gantry::agent
