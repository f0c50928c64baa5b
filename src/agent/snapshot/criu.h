#pragma once
// The real Snapshotter: runs the CRIU binary (>= 4.1; scripts/build_criu.sh installs it as
// /usr/local/lib/gantry/criu). Include this header for the whole snapshot API: it also brings in
// the Snapshotter interface (snapshotter.h).
//
// How criu is run: posix_spawn() of the binary with stdin on /dev/null, a fixed environment
// (PATH and CRIU_FAULT=130, without which dump hangs on hosts whose hardware breakpoints do not
// fire, such as Firecracker VMs), its log at -v4 in the image directory (dump.log,
// restore.log, lazy-pages.log) and a time limit per call, after which it is SIGKILLed. Dump and
// restore use --shell-job: the dumped process may be a process-group leader inside someone
// else's session (the agent's); restore uses --manage-cgroups=ignore (the caller moves the
// restored process into the cgroup it wants) and --restore-detached.
//
// Preconditions on the agent (as for ProcessRuntime): SIGCHLD is not ignored and nothing reaps
// with waitpid(-1) or wait(); the snapshotter waits for the pids it spawned and nothing else.
// Restore() wants the calling process to be a child subreaper (prctl(PR_SET_CHILD_SUBREAPER, 1))
// so that the restored tree becomes its child; without it, the tree goes to PID 1 (a warning is
// logged). Needs root (or CAP_CHECKPOINT_RESTORE and CAP_SYS_PTRACE); kLazy needs userfaultfd.
//
// Lazy restore (RestoreMode::kLazy): Restore() first starts `criu lazy-pages` as its own child,
// waits for it to listen on <dir>/lazy-pages.socket (the name is fixed by CRIU, relative to the
// image directory; --address only matters for a remote page server, so it is not passed), then
// runs `criu restore --lazy-pages`. The lazy-pages process then serves page faults and copies the
// remaining pages in the background (whether or not the restored process runs); it exits once
// every page is copied or the restored tree is gone. The snapshotter owns it: one background
// thread per such process waits for it (waitpid on its pid) and logs how it ended, so it never
// lingers as a zombie. If it is killed early, the restored process dies with SIGSEGV on its next
// fault on a page not yet copied (measured; it does not silently read zeros).
//
// GPU state (only with CriuOptions::cuda set; cuda_checkpoint.h): CRIU cannot dump a process
// that maps GPU device memory, so Dump() first asks the CUDA driver to move the root process's
// GPU state into its host memory (CudaCheckpointer::Suspend) when the driver reports it
// "running" (it has a CUDA context), then dumps it, and writes the file `cuda-suspended` into
// the image directory. The process must not be stopped then (the driver works through a thread
// inside it): Dump() fails with FailedPrecondition, without touching it, if it is. With
// leave_running, and whenever the dump fails (the tree keeps running), Dump() resumes the GPU
// state (CudaCheckpointer::Resume) before returning. Restore() of an image with
// `cuda-suspended` resumes the restored process's GPU state before it returns (the process
// comes back running, with its GPU memory in host memory and its CUDA calls blocked until
// then). Only the root process is handled; a child holding a CUDA context makes criu fail. A
// process whose GPU state someone else suspended already is dumped as it is, without the marker;
// where the checkpointer is not Available(), Dump() does not look for GPU state at all.
// Errors besides those of snapshotter.h: Dump() gives FailedPrecondition (stopped, or GPU state
// locked or failed by someone else; the process is untouched) or Unavailable (the lock timed out:
// its GPU work did not drain in timeout_ms; it runs on as before; retry) or the checkpointer's
// error (cuda_checkpoint.h says what state the process is left in); a leave_running dump whose
// Resume fails is Internal, its image discarded, and the process must be killed. Restore() gives
// FailedPrecondition for a marked image without a usable checkpointer (nothing is restored),
// and the checkpointer's error if Resume fails (the restored process is then killed and reaped).

#include <cstdint>
#include <memory>
#include <string>

#include "agent/snapshot/snapshotter.h"
#include "common/status.h"

namespace gantry::agent {

class CudaCheckpointer;  // cuda_checkpoint.h

struct CriuOptions {
  // Time limit for each criu command (dump, restore, the lazy-pages daemon's start-up, and
  // `criu --version`); past it, criu is SIGKILLed and the call fails with DeadlineExceeded.
  // Default: 60 s.
  int64_t timeout_ms = 60'000;
  // How long the destructor waits for lazy-pages daemons that are still copying pages before it
  // SIGKILLs them (their restored processes then die with SIGSEGV). Default: 60 s.
  int64_t lazy_drain_timeout_ms = 60'000;
  // How many lines at the end of criu's log an error message quotes. Default: 12.
  int log_tail_lines = 12;
  // Suspends and resumes the GPU state of dumped processes (see "GPU state" above); also bounds
  // its lock by timeout_ms. Not owned; must outlive the snapshotter. Default: null, no GPU
  // handling (a process holding a CUDA context then fails to dump, with criu's error).
  CudaCheckpointer* cuda = nullptr;
};

// The file Dump() writes into an image directory whose process had its GPU state suspended.
inline constexpr const char* kCudaSuspendedMarker = "cuda-suspended";

// The real snapshotter, running the CRIU binary at `criu_path` (a name without '/' is looked up
// in PATH now). Nothing is checked here: call Check() to know whether it can work.
// Destruction blocks until the lazy-pages daemons it started have exited (at most
// options.lazy_drain_timeout_ms, then they are killed) and reaps them.
std::unique_ptr<Snapshotter> NewCriuSnapshotter(std::string criu_path, CriuOptions options = {});

// The first usable CRIU (it runs and reports version >= 4.1) among: $GANTRY_CRIU,
// /usr/local/lib/gantry/criu, `criu` in PATH. Returns its path, or FailedPrecondition saying
// what each candidate lacked and that scripts/setup.sh installs it. Blocks for a few ms per
// candidate (runs `criu --version`). Thread-safe.
Result<std::string> FindCriu();

// Where scripts/build_criu.sh installs CRIU.
inline constexpr const char* kGantryCriuPath = "/usr/local/lib/gantry/criu";

}  // namespace gantry::agent
