#pragma once
// Running a helper binary (criu, skopeo, umoci) to completion from a process whose other
// children belong to someone else: a fixed environment and fixed descriptors for the child, and a
// wait for that one pid only, never waitpid(-1) (the agent's process runtime reaps its own
// children). Used by agent/snapshot (criu) and agent/oci (skopeo, umoci).
//
// All functions are thread-safe: they share no state. Callbacks run on the calling thread.

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"

namespace gantry {

struct SubprocessOptions {
  // The child's whole environment, "NAME=value" each; nothing is inherited. Default: empty.
  std::vector<std::string> env;
  // The child is SIGKILLed once this many milliseconds have passed since the wait began.
  // Default: 60 s.
  int64_t timeout_ms = 60'000;
  // If not null, the child is SIGKILLed once it reads true; looked at every 50 ms. Not owned; must
  // outlive the call. Default: none.
  const std::atomic<bool>* cancel = nullptr;
  // If set, called with each line of output as it comes, without its '\n' and a '\r' before it.
  // A line longer than max_output is passed in pieces (what has come of it once it is that long);
  // a last line without '\n' is passed once the child is reaped. Default: none.
  std::function<void(std::string_view)> on_line;
  // If >= 0, handed to the child as descriptor extra_fd_target (criu's --status-fd); the caller
  // keeps and closes its own. Default: none.
  int extra_fd = -1;
  // Where extra_fd lands in the child; >= 3. The child's descriptors 3..extra_fd_target-1 are
  // closed. Default: 3.
  int extra_fd_target = 3;
  // How much of the output is kept (its end). Default: 64 KiB.
  size_t max_output = 64 * 1024;
};

struct SubprocessResult {
  int wait_status = 0;     // as waitpid() returned it
  bool timed_out = false;  // SIGKILLed after options.timeout_ms
  bool cancelled = false;  // SIGKILLed because *options.cancel read true
  std::string output;      // stdout and stderr, interleaved; the last options.max_output bytes
  // Its exit code; -1 if a signal ended it.
  int exit_code() const;
  // Exited with 0 and was not killed for its time or a cancel.
  bool succeeded() const;
};

// "exit code 2", "killed by signal 9", else "wait status N".
std::string DescribeWaitStatus(int wait_status);

// The usual system directories, as a PATH value: what helpers the agent runs (criu, skopeo,
// umoci, runc) get, and where FindExecutable() looks after $PATH.
inline constexpr const char* kSystemPath =
    "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

// The program `name` names: `name` itself if it holds a '/', else the first executable regular
// file of that name in $PATH (empty entries skipped), then in the usual system directories
// (/usr/local/sbin ... /bin: an agent started without /usr/sbin in PATH still finds runc).
// "" when there is none.
std::string FindExecutable(const std::string& name);

// Starts argv (argv[0] is a path; PATH is not searched) with options.env as its environment,
// stdin on /dev/null, stdout and stderr on `out_fd` (on /dev/null if < 0), options.extra_fd (if
// >= 0) as options.extra_fd_target, no other descriptor open, default signal dispositions and
// an empty signal mask. Uses no other option. Any descriptor numbers may be passed: low ones are
// moved out of the way of the child's dup2()s. Returns the pid, which the caller must reap
// (WaitProcess). Errors: "cannot run <argv[0]>: <strerror>", FailedPrecondition if argv[0] does
// not exist (ENOENT), else Internal; InvalidArgument if argv is empty or extra_fd_target < 3.
Result<int> SpawnProcess(const std::vector<std::string>& argv, const SubprocessOptions& options,
                         int out_fd = -1);

// Waits for the child `pid`, and only it, and reaps it. Meanwhile reads `out_fd` (if >= 0; it is
// made non-blocking) into the result's output and options.on_line. SIGKILLs the child past
// options.timeout_ms or on options.cancel, then goes on waiting for it. Returns once the child is
// reaped, after reading what `out_fd` holds then: it does not wait for EOF on `out_fd` (a
// grandchild may hold it). Uses neither env nor the extra_fd options. Internal "waiting for pid
// N: ... (is something else in this process reaping children?)" if `pid` is not, or no longer,
// a child of this process.
Result<SubprocessResult> WaitProcess(int pid, int out_fd, const SubprocessOptions& options);

// SpawnProcess with stdout and stderr on a new pipe, then WaitProcess on it. The errors of both;
// FailedPrecondition only when argv[0] does not exist.
Result<SubprocessResult> RunProcess(const std::vector<std::string>& argv,
                                    const SubprocessOptions& options);

}  // namespace gantry
