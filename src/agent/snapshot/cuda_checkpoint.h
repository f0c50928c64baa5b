#pragma once
// CudaCheckpointer: moves a process's GPU state into its own host memory and back, with the CUDA
// driver's checkpoint API (cuCheckpointProcess*, CUDA 12.8 / driver 570 or newer), so that CRIU
// can dump a process that holds a CUDA context (criu.h: CriuOptions::cuda).
//
// Suspend(pid) = lock + checkpoint: the driver blocks the process's further CUDA calls, waits for
// its submitted GPU work, copies its device memory into host memory (allocations the driver makes
// inside that process) and releases every GPU resource: afterwards the process holds no
// /dev/nvidia* mapping and is an ordinary process for CRIU. Resume(pid) = restore + unlock: the
// driver re-acquires the GPU, copies the memory back to the same device addresses, and lets the
// process's CUDA calls go on. Its CPU threads are never stopped by either: a thread that calls
// CUDA in between blocks until Resume.
//
// Preconditions (see criu.cc for how Dump/Restore meet them): the driver does the work of
// Suspend and Resume on a thread *inside* the target process (its "restore thread",
// cuCheckpointProcessGetRestoreThreadId; CRIU's CUDA plugin lets that thread run while CRIU
// holds the process frozen), so the target must be able to run: not stopped (SIGSTOP), not
// frozen, not ptrace-stopped. Expected otherwise (inferred, not tried on a GPU): the lock waits
// until its timeout, and the other calls, which have none, block. Only the given pid is handled,
// not its children. Run as root, as the agent is (acting on another process's CUDA state
// presumably needs the rights to ptrace it; not verified).
//
// Threading: every implementation here is thread-safe; calls for one pid must not overlap. Every
// call blocks until the driver is done (Suspend/Resume copy the process's whole GPU memory, so
// their time grows with it; bench/cuda_checkpoint_probe --self-test measures it on a GPU).
//
// Errors (all methods): FailedPrecondition when the driver cannot do it here (no libcuda.so.1,
// driver older than 12.8, a symbol missing, no GPU; or the process is in the wrong state);
// NotFound when `pid` does not exist; DeadlineExceeded when the lock timed out; InvalidArgument
// for bad arguments; Internal for other driver errors. Each message names the driver call, its
// CUresult (name, number and cuGetErrorString text) and the pid.

#include <cstdint>
#include <memory>
#include <string>

#include "common/status.h"

namespace gantry::agent {

// The checkpoint state of one process, as the CUDA driver sees it.
enum class ProcessGpuState {
  kNone,          // the process has no CUDA context (nothing to suspend)
  kRunning,       // it holds a CUDA context and its CUDA calls run
  kLocked,        // its CUDA calls block (after a lock, or half-way through Suspend/Resume)
  kCheckpointed,  // its GPU memory is in host memory; it holds no GPU resource
  kFailed,        // the driver hit an unrecoverable error during a checkpoint or restore
};
const char* ProcessGpuStateName(ProcessGpuState state);

class CudaCheckpointer {
 public:
  virtual ~CudaCheckpointer() = default;

  // Ok if the checkpoint API can be used here: libcuda.so.1 loads, cuInit succeeds, the driver
  // supports API version >= 12080 (cuDriverGetVersion) and exports every cuCheckpointProcess*
  // symbol. Otherwise FailedPrecondition saying what is missing. The answer is computed once
  // (the first call loads and initialises the driver) and then cached.
  virtual Status Available() = 0;

  // The GPU checkpoint state of `pid`. kNone when the driver does not know the process and the
  // process maps no /dev/nvidia* device.
  virtual Result<ProcessGpuState> State(int pid) = 0;

  // Lock + checkpoint `pid` (kRunning -> kCheckpointed; from kLocked only the checkpoint is done;
  // kCheckpointed is Ok at once). `timeout_ms` (> 0) bounds the lock, i.e. the wait for the
  // process's in-flight CUDA calls and GPU work; the checkpoint itself has no time limit in the
  // driver API. On error the process is left as the message says: a failed or timed-out lock
  // leaves it running as before; a failed checkpoint is followed by an unlock, which normally
  // leaves it running on the GPU again; if that unlock fails too, its CUDA calls stay blocked
  // (kLocked) or the driver reports kFailed, and the caller should kill it.
  virtual Status Suspend(int pid, int64_t timeout_ms) = 0;

  // Restore + unlock `pid` (kCheckpointed -> kRunning; from kLocked only the unlock is done;
  // kRunning is Ok at once). kNone is FailedPrecondition. On error the process's CUDA calls stay
  // blocked (the message gives its state); the caller should kill it.
  virtual Status Resume(int pid) = 0;
};

// --- CUDA driver API declarations -----------------------------------------------------------
// There is no cuda.h on build machines: the few types and functions used here are declared
// by hand, from the CUDA 12.8 driver API reference (docs.nvidia.com/cuda/cuda-driver-api,
// "6.37 CUDA Checkpointing" = group__CUDA__CHECKPOINT.html, "Data types used by CUDA driver"
// = group__CUDA__TYPES.html, structCUcheckpoint*Args.html) and NVIDIA's r570 sample
// (github.com/NVIDIA/cuda-checkpoint, src/r570-features.c, "Build with the CUDA 12.8 toolkit").
// Only ABI-stable facts are relied on; see cuda_checkpoint.cc for the details of each one.
namespace cuda {

// cuda.h: `typedef enum cudaError_enum {...} CUresult;` (an int-sized C enum).
using CUresult = int;
inline constexpr CUresult CUDA_SUCCESS = 0;
inline constexpr CUresult CUDA_ERROR_INVALID_VALUE = 1;
inline constexpr CUresult CUDA_ERROR_OUT_OF_MEMORY = 2;
inline constexpr CUresult CUDA_ERROR_NOT_INITIALIZED = 3;
inline constexpr CUresult CUDA_ERROR_NO_DEVICE = 100;
inline constexpr CUresult CUDA_ERROR_ILLEGAL_STATE = 401;
inline constexpr CUresult CUDA_ERROR_NOT_FOUND = 500;
inline constexpr CUresult CUDA_ERROR_NOT_READY = 600;
inline constexpr CUresult CUDA_ERROR_NOT_PERMITTED = 800;
inline constexpr CUresult CUDA_ERROR_NOT_SUPPORTED = 801;
inline constexpr CUresult CUDA_ERROR_TIMEOUT = 909;

// cuda.h (12.8): `typedef enum CUprocessState_enum { CU_PROCESS_STATE_RUNNING = 0,
// CU_PROCESS_STATE_LOCKED, CU_PROCESS_STATE_CHECKPOINTED, CU_PROCESS_STATE_FAILED }`. Later
// drivers (CUDA 13) add CU_PROCESS_STATE_CHECKPOINTING (4) and CU_PROCESS_STATE_RESTORING (5).
enum CUprocessState : int {
  CU_PROCESS_STATE_RUNNING = 0,
  CU_PROCESS_STATE_LOCKED = 1,
  CU_PROCESS_STATE_CHECKPOINTED = 2,
  CU_PROCESS_STATE_FAILED = 3,
};

// cuda.h: `typedef struct CUcheckpointLockArgs_st { unsigned int timeoutMs; unsigned int
// reserved0; cuuint64_t reserved1[7]; } CUcheckpointLockArgs;` - declaration order as on
// structCUcheckpointLockArgs.html of the CUDA 13 docs ("Defined in cuda.h"); the 12.8 doxygen
// page lists the same three members (alphabetically). 64 bytes; reserved fields must be zero.
struct CUcheckpointLockArgs {
  unsigned int timeoutMs;  // 0 = no timeout
  unsigned int reserved0;
  uint64_t reserved1[7];
};
static_assert(sizeof(CUcheckpointLockArgs) == 64);
// The checkpoint, restore and unlock arguments are optional ("args - Optional ... arguments"):
// NULL is passed, so their layouts (which changed between 12.8 and 13.x, always 64 bytes) are
// not needed.
struct CUcheckpointCheckpointArgs;
struct CUcheckpointRestoreArgs;
struct CUcheckpointUnlockArgs;

// The entry points the checkpointer calls, as plain C function pointers; null = not exported.
// Symbol names are unversioned in libcuda (cuda.h has no _v2 aliases for these).
struct CudaDriverApi {
  // Non-empty if libcuda could not be loaded: why (dlerror()). The pointers are then null.
  std::string load_error;
  // CUresult cuInit(unsigned int Flags) - since CUDA 2.0.
  CUresult (*cuInit)(unsigned int flags) = nullptr;
  // CUresult cuDriverGetVersion(int* driverVersion) - 1000 * major + 10 * minor, e.g. 12080.
  CUresult (*cuDriverGetVersion)(int* version) = nullptr;
  // CUresult cuGetErrorName(CUresult error, const char** pStr) - since CUDA 6.0.
  CUresult (*cuGetErrorName)(CUresult error, const char** str) = nullptr;
  // CUresult cuGetErrorString(CUresult error, const char** pStr) - since CUDA 6.0.
  CUresult (*cuGetErrorString)(CUresult error, const char** str) = nullptr;
  // CUresult cuCheckpointProcessGetState(int pid, CUprocessState* state)
  CUresult (*cuCheckpointProcessGetState)(int pid, CUprocessState* state) = nullptr;
  // CUresult cuCheckpointProcessGetRestoreThreadId(int pid, int* tid)
  CUresult (*cuCheckpointProcessGetRestoreThreadId)(int pid, int* tid) = nullptr;
  // CUresult cuCheckpointProcessLock(int pid, CUcheckpointLockArgs* args)
  CUresult (*cuCheckpointProcessLock)(int pid, CUcheckpointLockArgs* args) = nullptr;
  // CUresult cuCheckpointProcessCheckpoint(int pid, CUcheckpointCheckpointArgs* args)
  CUresult (*cuCheckpointProcessCheckpoint)(int pid, CUcheckpointCheckpointArgs* args) = nullptr;
  // CUresult cuCheckpointProcessRestore(int pid, CUcheckpointRestoreArgs* args)
  CUresult (*cuCheckpointProcessRestore)(int pid, CUcheckpointRestoreArgs* args) = nullptr;
  // CUresult cuCheckpointProcessUnlock(int pid, CUcheckpointUnlockArgs* args)
  CUresult (*cuCheckpointProcessUnlock)(int pid, CUcheckpointUnlockArgs* args) = nullptr;
};

// The lowest driver API version with the whole checkpoint API (lock with a timeout, restore and
// unlock as separate calls): CUDA 12.8, shipped with driver 570.
inline constexpr int kMinCheckpointDriverVersion = 12080;

}  // namespace cuda

// Loads `library` with dlopen (RTLD_NOW | RTLD_LOCAL) and fills the table with dlsym. Never
// fails: a library that cannot be loaded gives a table with load_error set. The library stays
// loaded for the life of the process (libcuda must not be unloaded). Thread-safe.
cuda::CudaDriverApi LoadCudaDriverApi(const std::string& library = "libcuda.so.1");

// The checkpointer calling `api`: the real driver's table (LoadCudaDriverApi) or, in tests, a
// table of fake functions. cuInit(0) is called on the first call that needs the driver.
std::unique_ptr<CudaCheckpointer> NewCudaCheckpointer(cuda::CudaDriverApi api);

// The real checkpointer: NewCudaCheckpointer(LoadCudaDriverApi()).
std::unique_ptr<CudaCheckpointer> NewCudaCheckpointer();

}  // namespace gantry::agent
