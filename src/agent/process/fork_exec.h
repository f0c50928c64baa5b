#pragma once
// The fork/exec protocol of LocalProcessRuntime::Start(): what the child runs between fork() and
// exec(), prepared before fork() so that the child need not allocate, and the parent's end of
// it. Internal to src/agent/process.
//
// The protocol, between fork() and exec():
//   1. The child makes itself a session leader (setsid, which also makes it the leader of a new
//      process group) and waits on the `go` socket (a socket, so that the parent can write to
//      it without risking SIGPIPE). Its own session, not just its own group: a process whose
//      session leader is not visible in its pid namespace (the agent's session when the agent
//      runs in a container or CI sandbox) cannot be checkpointed by CRIU, and a worker has no
//      business with the agent's terminal. Only the child makes the group, never the parent
//      too (setsid fails for a group leader); the group exists before Start() returns, because
//      Start() waits until the child has exec'd or failed.
//   2. The parent moves the child into its cgroup, then releases it through `go`, so none of
//      the worker's code runs outside its limits.
//   3. The child redirects stdio, enters its mount view (ProcessSpec::view, if any: the child
//      was cloned into new namespaces for it), joins the spec's network namespace (if any),
//      takes its user and group (if any), chdirs and execs. If any step fails it writes an
//      ExecFailure to the `report` pipe and exits 127; a successful exec closes that pipe
//      (O_CLOEXEC), so the parent reads EOF. Start() waits for one or the other.
// Only async-signal-safe calls happen in the child, so the agent may have other threads.

#include <string>
#include <vector>

#include "agent/process/mount_view.h"
#include "agent/process/process_runtime.h"
#include "common/fd.h"
#include "common/status.h"

namespace gantry::agent {

// What a child reports through the `report` pipe when it cannot exec.
struct ExecFailure {
  enum Stage : int { kSetup, kUser, kChdir, kExec, kNetwork, kView } stage;
  int err;
  int step = -1;  // kView: the ViewPlan step at fault
};

// Everything the child needs, prepared before fork() so that it need not allocate.
struct ChildPlan {
  std::vector<const char*> candidates;  // paths to try execve() on, in order
  std::vector<char*> argv;              // null-terminated
  std::vector<char*> envp;              // null-terminated
  const char* workdir = nullptr;        // null: stay
  int dev_null = -1, out = -1, err = -1, go = -1, report = -1;
  pid_t parent = 0;  // the agent: the child dies with it
  int nice = 0;
  int uid = -1, gid = -1;          // ProcessSpec::uid, gid
  int netns = -1;                  // ProcessSpec::netns_fd
  const ViewPlan* view = nullptr;  // ProcessSpec::view, prepared
  int64_t view_nproc = 0;          // with a view: RLIMIT_NPROC (ProcessSpec::pids_max); 0: none
};

// Fills plan's candidates, argv, envp, workdir and view for `spec`. They point into `spec`,
// *candidates, *env and *view, which must stay alive and unchanged until the child has exec'd.
// InvalidArgument for an environment variable name that is empty or holds '=', or a view with
// a user or a network namespace; ViewPlan::Prepare()'s errors.
Status FillChildPlan(const ProcessSpec& spec, std::vector<std::string>* candidates,
                     std::vector<std::string>* env, ViewPlan* view, ChildPlan* plan);

// fork(), or for a plan with a view a clone() into new namespaces (kViewCloneFlags) that
// returns as fork() does.
int ForkChild(const ChildPlan& plan);

// The descriptors between the parent and a child being started. The child's ends (dev_null,
// out_w, err_w, go_r, report_w) are the ones its ChildPlan names; the parent keeps the others.
struct ChildChannels {
  Fd dev_null, out_r, out_w, err_r, err_w, go_r, go_w, report_r, report_w;

  // Opens them all (each above stderr, close-on-exec) and points plan's descriptors at the
  // child's ends.
  Status Open(ChildPlan* plan);
  // In the parent after fork(): closes the child's ends.
  void CloseChildEnds();
};

// Runs in the child between fork() and exec(): async-signal-safe calls only. Never returns.
[[noreturn]] void RunChild(const ChildPlan& plan);

// In the parent: releases the child through `go` (closed then) and waits until it has exec'd
// (ok) or reported on `report_fd` why it could not (the error names the step: its setup, its
// view (`view`, the plan's), the workdir, or running spec.argv[0]).
Status ReleaseChild(Fd* go, int report_fd, const ProcessSpec& spec, const ViewPlan* view);

}  // namespace gantry::agent
