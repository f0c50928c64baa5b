#pragma once
// ProcessRuntime: how the node agent starts a worker as a child process, stops it, reaps it and
// collects its output. The agent talks to this interface only; NewLocalProcessRuntime() is the
// real one (fork/exec, process groups, cgroups) and FakeProcessRuntime (fake_process_runtime.h)
// stands in for it in agent tests.
//
// Threading: not thread-safe. The agent calls every method from one thread. No call waits on a
// child, except that Start() returns once the child has exec'd (or failed to), and StopAll()
// and the destructor wait for the children they end.
//
// Precondition: SIGCHLD is not ignored in the agent and nothing else in it reaps with
// waitpid(-1) or wait(): the runtime reaps its own children.
//
// The real runtime makes the agent process a child subreaper (PR_SET_CHILD_SUBREAPER), so
// that a worker forked from a template, or restored by CRIU, becomes the agent's child. Orphans
// of workers are re-parented to it too: Reap() also reaps zombies that are not its children but
// sit in another process group than the agent's (helpers the agent spawns itself, such as
// criu, stay in its group and are left to whoever waits for them).
//
// Ownership: the runtime owns its children. Every child it started is reaped by it (no zombies);
// destroying the runtime SIGKILLs the children still running and reaps them.

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "agent/process/mount_view.h"
#include "common/env.h"
#include "common/status.h"

namespace gantry::agent {

// The cgroup limits of a process (0: none of that kind).
struct Limits {
  double cpu = 0;         // cores, a soft share (cpu.shares / cpu.weight)
  int64_t memory_mb = 0;  // hard limit on the cgroup's memory, swap included
  int64_t pids_max = 0;   // the most processes and threads the cgroup may hold
};

struct ProcessSpec {
  // The worker id: names its cgroup and its log lines. Letters, digits, '.', '_', '-'.
  std::string id;
  // argv[0] without a '/' is looked up in the PATH of `env` if set there, else in the agent's
  // (empty PATH entries are skipped). With a '/', it is taken as is (relative to `workdir`).
  std::vector<std::string> argv;
  std::string workdir;                     // "" = the agent's cwd
  std::map<std::string, std::string> env;  // the child's whole environment; nothing is inherited
  double cpu = 0;                          // cores, a soft share (cpu.shares / cpu.weight); 0: none
  int64_t memory_mb = 0;                   // hard limit on the cgroup's memory; 0: none
  // Processes and threads in its cgroup; 0: no limit. In a mount view (`view`), also its
  // RLIMIT_NPROC, which its own user namespace makes a count of its own tasks only: a cap on a
  // fork bomb where there are no cgroups (an agent that is not root).
  int64_t pids_max = 0;
  int nice = 0;  // scheduling priority (nice value, -20..19) it starts with; 0: the default
  // The user and group it runs as (its only group; no new privileges: setuid programs do not
  // raise them) when >= 0; -1: the agent's. Set before its workdir is entered, so that a
  // workdir it may not enter fails the start (PermissionDenied).
  int uid = -1;
  int gid = -1;
  // A network namespace (a descriptor of the agent's) it joins first, before it changes user;
  // -1: the agent's. Not owned: the caller may close it once Start() has returned.
  int netns_fd = -1;
  // A file system of its own, in namespaces of its own (mount_view.h), for a worker that keeps
  // the agent's user (not with uid or netns_fd). Only Start() honours it. nullopt: the host's.
  std::optional<MountView> view;

  Limits limits() const { return {cpu, memory_mb, pids_max}; }
};

struct ProcessExit {
  std::string id;
  int pid = 0;
  int exit_code = 0;        // -1 if killed by a signal
  int term_signal = 0;      // 0 if it exited
  bool oom_killed = false;  // the kernel's OOM killer killed a process of its cgroup
  int64_t at_ms = 0;        // Clock time at which it was reaped
};

struct LogLine {
  std::string id;
  bool stderr_stream = false;
  std::string text;   // one line without its newline; at most kMaxLogLineBytes
  int64_t at_ms = 0;  // Clock time at which it was read
};

// Longer lines are split into pieces of this size.
inline constexpr size_t kMaxLogLineBytes = 16 * 1024;

// The end of a launched process that is not a child of this one (LaunchContext::external):
// whoever reaps it (its parent) says how it ended.
struct ExternalExit {
  std::optional<int> wait_status;  // as waitpid() gives it; nullopt until known
};

// What a Launcher gets to make a child in place of the runtime's own fork/exec.
struct LaunchContext {
  int stdout_fd = -1;  // write ends of the child's stdout and stderr pipes; the runtime keeps
  int stderr_fd = -1;  // the read ends and closes these once the launcher returns
  // cgroup.procs files the child must be in before it runs any of the worker's code (empty
  // when the child runs without cgroups).
  std::vector<std::string> cgroup_procs;
  int agent_pid = 0;  // this process: the child's parent once it runs
  // Out: set by a launcher whose child already sits in a cgroup made by CreateCgroup() (a
  // template's spare); the runtime then makes that cgroup the child's, with the spec's limits,
  // instead of moving the child.
  std::string* in_cgroup = nullptr;
  // Out: set by a launcher whose process is not a child of this one and will not become one
  // (a worker forked inside a container's PID namespace: its parent is the container's init).
  // The runtime then learns that it ended from a pidfd, and how from this object, which the
  // launcher's side fills in once the parent has reaped it; if that does not come within
  // kExternalStatusWaitMs, the exit is reported with exit_code -1. May be null (a fake runtime).
  std::shared_ptr<ExternalExit>* external = nullptr;
};

inline constexpr int64_t kExternalStatusWaitMs = 2'000;

// Makes the child for Launch(): for example a fork of a template (agent/template/), or a
// process restored from a snapshot. The process it returns must be a child of this process by
// the time it returns (a fork, or an orphan re-parented to it: the runtime is a child
// subreaper), or else be declared external (LaunchContext::external); and the leader of its
// own process group.
using Launcher = std::function<Result<int>(const ProcessSpec& spec, const LaunchContext& ctx)>;

class ProcessRuntime {
 public:
  virtual ~ProcessRuntime() = default;

  // Starts spec.argv in a new session and process group. Returns its pid; AlreadyExists if a
  // process with this id has not been reaped yet; InvalidArgument for a bad id or empty argv;
  // NotFound or PermissionDenied when the workdir or the program cannot be used (nothing is left
  // running). Resource limits that cannot be applied never fail a start (see limits_note()).
  virtual Result<int> Start(const ProcessSpec& spec) = 0;

  // As Start(), but `launch` makes the process (spec.argv is not run). The runtime creates the
  // cgroup and the output pipes first, moves the launched pid into the cgroup again afterwards
  // (a no-op for a launcher that did so), and from then on owns the child as if it had
  // started it. Returns the launcher's error with nothing left behind.
  virtual Result<int> Launch(const ProcessSpec& spec, const Launcher& launch) = 0;

  // A cgroup with these limits for a process that a Launcher will hand over later (see
  // LaunchContext::in_cgroup): its cgroup.procs files, none when the runtime runs without
  // cgroups. The caller removes it with RemoveCgroup() if it is never handed over.
  virtual Result<std::vector<std::string>> CreateCgroup(const std::string& id,
                                                        const Limits& limits) = 0;
  // Removes a cgroup made by CreateCgroup(), SIGKILLing what is left in it; retried on later
  // Reap()s while it is busy.
  virtual void RemoveCgroup(const std::string& id) = 0;

  // Sends SIGTERM to the process group of `id` now and SIGKILL to it once grace_ms have passed
  // (sent by Reap()). grace_ms <= 0 sends SIGKILL at once. Unknown ids are ignored; a second
  // Stop never moves the SIGKILL later.
  virtual void Stop(const std::string& id, int64_t grace_ms) = 0;

  // The children that ended since the last call; also sends the SIGKILLs that are due. When a
  // child ends, whatever is left of its process group and cgroup is SIGKILLed, its remaining
  // output is read (DrainLogs() returns it) and its id is free for Start() again.
  virtual std::vector<ProcessExit> Reap() = 0;

  // Complete lines read so far from every child's stdout and stderr, in order per stream. A
  // partial last line is held until its newline comes or the child is reaped.
  virtual std::vector<LogLine> DrainLogs() = 0;

  // Ids of the children not yet reaped, sorted.
  virtual std::vector<std::string> Running() const = 0;

  // For shutdown: Stop()s every child, waits up to grace_ms (plus a little) for them to end,
  // SIGKILLs the rest and reaps them all. Blocks. Their exits are returned by the next Reap().
  virtual void StopAll(int64_t grace_ms) = 0;

  // "" when cpu and memory limits are enforced; otherwise why they are not.
  virtual std::string limits_note() const = 0;
  // How limits are applied, e.g. "cgroup v2 (memory, cpu, pids) under /sys/fs/cgroup/gantry";
  // "" when they are not (limits_note() says why).
  virtual std::string limits_summary() const = 0;
};

struct ProcessRuntimeOptions {
  // Put each child in its own cgroup (cpu and memory controllers) when the host allows it.
  // Default: true.
  bool use_cgroups = true;
  // Children's cgroups are <hierarchy>/<cgroup_prefix>/<id>. Default: "gantry".
  std::string cgroup_prefix = "gantry";
};

// The real runtime. `clock` (not owned, must outlive the runtime) times SIGKILL deadlines and
// stamps exits and log lines. cgroups: v2 if /sys/fs/cgroup/cgroup.controllers offers memory or
// cpu, else the v1 memory and cpu hierarchies under /sys/fs/cgroup/{memory,cpu}; if neither can
// be written, children run without limits and limits_note() (and one warning in the log) says so.
std::unique_ptr<ProcessRuntime> NewLocalProcessRuntime(const Clock* clock,
                                                       ProcessRuntimeOptions options);

}  // namespace gantry::agent
