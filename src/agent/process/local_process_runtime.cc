// The real ProcessRuntime: fork/exec, one session (and so one process group) and one cgroup per
// child, output through non-blocking pipes, every child reaped with waitpid.
//
// Start() brings the child up through the protocol of fork_exec.h: the child waits until the
// parent has put it into its cgroup, and Start() returns once it has exec'd or failed.
//
// A process group is signalled with kill(-pid) only while its leader is unreaped (perhaps a
// zombie): until then the pid, and so the group id, cannot be reused. Reap() therefore looks
// for exits with WNOWAIT, kills what is left of the group, and only then reaps the leader.

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <optional>
#include <set>
#include <thread>
#include <utility>

#include "agent/process/cgroups.h"
#include "agent/process/fork_exec.h"
#include "agent/process/process_runtime.h"
#include "common/fd.h"
#include "common/log.h"
#include "common/procfs.h"

namespace gantry::agent {
namespace {

// Read from one stream per call at most, so that a chatty child cannot stall the agent.
constexpr size_t kMaxReadPerDrain = 1 << 20;
// How often StopAll() looks for exits while it waits.
constexpr auto kStopAllPoll = std::chrono::milliseconds(5);

bool ValidId(const std::string& id) {
  if (id.empty() || id == "." || id == "..") return false;
  return std::all_of(id.begin(), id.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
           c == '_' || c == '-';
  });
}

class LocalProcessRuntime final : public ProcessRuntime {
 public:
  LocalProcessRuntime(const Clock* clock, const ProcessRuntimeOptions& options)
      : clock_(clock), cgroups_(options.use_cgroups, options.cgroup_prefix) {
    if (!cgroups_.note().empty()) GLOG_WARN("process runtime: %s", cgroups_.note().c_str());
    if (cgroups_.enabled())
      GLOG_INFO("process runtime: limits through %s", cgroups_.Summary().c_str());
    // An older minute: not those another runtime (a test beside this one) is setting up.
    if (int n = cgroups_.RemoveLeftovers(60)) {
      GLOG_INFO("process runtime: removed %d empty cgroups left behind", n);
    }
    if (prctl(PR_SET_CHILD_SUBREAPER, 1) != 0) {
      GLOG_WARN(
          "process runtime: cannot become a child subreaper (%s): forks from templates "
          "will fail and fall back to full starts",
          strerror(errno));
    }
  }

  ~LocalProcessRuntime() override {
    for (auto& [id, child] : children_) Finish(child);
    RetryStaleCgroups();
    for (const std::string& id : stale_cgroups_) {
      GLOG_WARN("process runtime: cgroup of %s still busy; left in place", id.c_str());
    }
  }

  Result<int> Start(const ProcessSpec& spec) override;
  Result<int> Launch(const ProcessSpec& spec, const Launcher& launch) override;
  Result<std::vector<std::string>> CreateCgroup(const std::string& id,
                                                const Limits& limits) override;
  void RemoveCgroup(const std::string& id) override;
  void Stop(const std::string& id, int64_t grace_ms) override;
  std::vector<ProcessExit> Reap() override;
  std::vector<LogLine> DrainLogs() override;
  std::vector<std::string> Running() const override;
  void StopAll(int64_t grace_ms) override;
  std::string limits_note() const override { return cgroups_.note(); }
  std::string limits_summary() const override {
    return cgroups_.enabled() ? cgroups_.Summary() : "";
  }

 private:
  struct Stream {
    Fd fd;  // read end, non-blocking; empty after EOF
    bool is_stderr = false;
    std::string partial;  // bytes after the last complete line
  };
  struct Child {
    std::string id;
    int pid = 0;
    Stream out, err;
    bool in_cgroup = false;
    std::string cgroup;  // its cgroup's id: its own id, unless it came in another one
    std::optional<int64_t> kill_at_ms;  // when Stop()'s SIGKILL is due
    bool killed = false;                // SIGKILL sent
    // Not a child of ours (LaunchContext::external): its end is seen on `pidfd`, its status
    // comes through `external`.
    std::shared_ptr<ExternalExit> external;
    Fd pidfd;
    std::optional<int64_t> ended_ms;  // when `pidfd` said it ended
  };

  // Reaps the children that ended into exits_ and sends the SIGKILLs that are due.
  // `await_status`: an external child that ended is reaped only once its status is known or
  // no longer awaited (false: at once, as StopAll() does, which nobody reports to meanwhile).
  void ReapEnded(bool await_status = true);
  // Whether `child` ended (and, if external and `await_status`, its status is known or no
  // longer awaited).
  bool Ended(Child& child, int64_t now, bool await_status);
  // Kills what is left of `child`, reaps it, reads the rest of its output and removes its
  // cgroup. `child` must then be erased.
  ProcessExit Finish(Child& child);
  // Reads what `s` has (everything it has if `final`, then closes it) into lines_.
  void ReadStream(const std::string& id, Stream& s, bool final);
  void Emit(const std::string& id, const Stream& s, std::string text);
  void RetryStaleCgroups();
  // Reaps zombies re-parented to this process that are in another process group.
  void ReapStrays();
  // Checks spec, makes its cgroup; *in_cgroup says whether it has one.
  Status Prepare(const ProcessSpec& spec, bool* in_cgroup);
  // Registers a started child: its output is read from out_r and err_r.
  void Adopt(const ProcessSpec& spec, int pid, Fd out_r, Fd err_r, bool in_cgroup);

  const Clock* clock_;
  Cgroups cgroups_;
  std::map<std::string, Child> children_;  // by id; not yet reaped
  std::vector<ProcessExit> exits_;         // reaped, not yet returned by Reap()
  std::vector<LogLine> lines_;             // read, not yet returned by DrainLogs()
  std::set<std::string> stale_cgroups_;    // ids whose cgroup was busy at their exit
};

Status LocalProcessRuntime::Prepare(const ProcessSpec& spec, bool* in_cgroup) {
  *in_cgroup = false;
  if (!ValidId(spec.id)) return InvalidArgument("bad process id '" + spec.id + "'");
  if (children_.contains(spec.id)) return AlreadyExists("process " + spec.id + " is running");
  if (cgroups_.enabled()) {
    Status s = cgroups_.Create(spec.id, spec.limits());
    if (s.ok()) {
      *in_cgroup = true;
      stale_cgroups_.erase(spec.id);  // Create() replaced it
    } else {
      GLOG_WARN("process runtime: %s runs without limits: %s", spec.id.c_str(),
                s.message().c_str());
    }
  }
  return Status::Ok();
}

void LocalProcessRuntime::Adopt(const ProcessSpec& spec, int pid, Fd out_r, Fd err_r,
                                bool in_cgroup) {
  fcntl(out_r.get(), F_SETFL, O_NONBLOCK);
  fcntl(err_r.get(), F_SETFL, O_NONBLOCK);
  Child& child = children_[spec.id];
  child.id = spec.id;
  child.pid = pid;
  child.out.fd = std::move(out_r);
  child.err.fd = std::move(err_r);
  child.err.is_stderr = true;
  child.in_cgroup = in_cgroup;
  child.cgroup = spec.id;
}

Result<int> LocalProcessRuntime::Launch(const ProcessSpec& spec, const Launcher& launch) {
  bool in_cgroup = false;
  GANTRY_RETURN_IF_ERROR(Prepare(spec, &in_cgroup));
  Fd out_r, out_w, err_r, err_w;
  Status pipes = MakeChannel(&out_r, &out_w);
  if (pipes.ok()) pipes = MakeChannel(&err_r, &err_w);
  if (!pipes.ok()) {
    if (in_cgroup) cgroups_.Remove(spec.id);
    return pipes;
  }
  LaunchContext ctx;
  ctx.stdout_fd = out_w.get();
  ctx.stderr_fd = err_w.get();
  if (in_cgroup) ctx.cgroup_procs = cgroups_.ProcsFiles(spec.id);
  ctx.agent_pid = getpid();
  std::string came_in;  // a cgroup of CreateCgroup() the child already sits in
  ctx.in_cgroup = &came_in;
  std::shared_ptr<ExternalExit> external;
  ctx.external = &external;
  Result<int> pid = launch(spec, ctx);
  Fd pidfd;
  bool ended = false;  // an external process that ended (and was reaped) already
  if (pid.ok() && external) {
    const int fd = static_cast<int>(syscall(SYS_pidfd_open, *pid, 0));
    if (fd >= 0) {
      pidfd = Fd(fd);
    } else if (errno == ESRCH) {
      ended = true;  // its status comes through `external` all the same
    } else {
      const int err = errno;
      kill(-*pid, SIGKILL);
      pid = ErrnoStatus("pidfd_open of " + spec.id, err);
    }
  }
  out_w.Reset();
  err_w.Reset();
  if (!pid.ok()) {
    if (in_cgroup && !cgroups_.Remove(spec.id)) {
      cgroups_.KillAll(spec.id);  // whatever the launcher left there
      stale_cgroups_.insert(spec.id);
    }
    return pid.status();
  }
  std::string cgroup = spec.id;
  if (in_cgroup && !came_in.empty()) {
    // Its cgroup was made ahead: it becomes the child's (renamed to its id where the kernel
    // can), with the spec's limits; no move of a process on the way.
    cgroups_.Remove(spec.id);
    cgroup = cgroups_.Rename(came_in, spec.id).ok() ? spec.id : came_in;
    Status s = cgroups_.SetLimits(cgroup, spec.limits());
    if (!s.ok()) {
      GLOG_WARN("process runtime: %s runs without some limits: %s", spec.id.c_str(),
                s.message().c_str());
    }
  } else if (in_cgroup) {
    Status s = cgroups_.AddProcess(spec.id, *pid);
    if (!s.ok()) {
      GLOG_WARN("process runtime: %s runs without some limits: %s", spec.id.c_str(),
                s.message().c_str());
    }
  }
  Adopt(spec, *pid, std::move(out_r), std::move(err_r), in_cgroup);
  Child& child = children_[spec.id];
  child.cgroup = cgroup;
  child.external = std::move(external);
  child.pidfd = std::move(pidfd);
  if (ended) child.ended_ms = clock_->NowMs();
  return *pid;
}

Result<int> LocalProcessRuntime::Start(const ProcessSpec& spec) {
  if (spec.argv.empty()) return InvalidArgument("process " + spec.id + ": empty argv");
  if (!ValidId(spec.id)) return InvalidArgument("bad process id '" + spec.id + "'");
  if (children_.contains(spec.id)) return AlreadyExists("process " + spec.id + " is running");

  std::vector<std::string> candidates, env;  // what `plan` points into
  ViewPlan view;
  ChildPlan plan;
  GANTRY_RETURN_IF_ERROR(FillChildPlan(spec, &candidates, &env, &view, &plan));
  ChildChannels channels;
  GANTRY_RETURN_IF_ERROR(channels.Open(&plan));

  bool in_cgroup = false;
  GANTRY_RETURN_IF_ERROR(Prepare(spec, &in_cgroup));

  plan.parent = getpid();
  plan.nice = spec.nice;
  const int pid = ForkChild(plan);
  if (pid < 0) {
    Status s = ErrnoStatus(plan.view ? "clone into new namespaces" : "fork", errno);
    if (in_cgroup) cgroups_.Remove(spec.id);
    return s;
  }
  if (pid == 0) RunChild(plan);

  channels.CloseChildEnds();
  if (in_cgroup) {
    // On failure the child may be in some of its cgroups; they are all removed at its exit.
    Status s = cgroups_.AddProcess(spec.id, pid);
    if (!s.ok()) {
      GLOG_WARN("process runtime: %s runs without some limits: %s", spec.id.c_str(),
                s.message().c_str());
    }
  }
  if (Status failed = ReleaseChild(&channels.go_w, channels.report_r.get(), spec, plan.view);
      !failed.ok()) {
    kill(pid, SIGKILL);  // it is exiting already unless it never got `go`
    while (waitpid(pid, nullptr, 0) < 0 && errno == EINTR) {
    }
    if (in_cgroup) cgroups_.Remove(spec.id);
    return failed;
  }

  Adopt(spec, pid, std::move(channels.out_r), std::move(channels.err_r), in_cgroup);
  return pid;
}

Result<std::vector<std::string>> LocalProcessRuntime::CreateCgroup(const std::string& id,
                                                                   const Limits& limits) {
  if (!ValidId(id)) return InvalidArgument("bad cgroup id '" + id + "'");
  if (!cgroups_.enabled()) return std::vector<std::string>{};
  GANTRY_RETURN_IF_ERROR(cgroups_.Create(id, limits));
  stale_cgroups_.erase(id);
  return cgroups_.ProcsFiles(id);
}

void LocalProcessRuntime::RemoveCgroup(const std::string& id) {
  if (!cgroups_.enabled() || !ValidId(id)) return;
  cgroups_.KillAll(id);
  if (!cgroups_.Remove(id)) stale_cgroups_.insert(id);
}

void LocalProcessRuntime::Stop(const std::string& id, int64_t grace_ms) {
  auto it = children_.find(id);
  if (it == children_.end() || it->second.killed) return;
  Child& child = it->second;
  if (grace_ms <= 0) {
    kill(-child.pid, SIGKILL);
    child.killed = true;
    return;
  }
  kill(-child.pid, SIGTERM);
  const int64_t due = clock_->NowMs() + grace_ms;
  child.kill_at_ms = child.kill_at_ms ? std::min(*child.kill_at_ms, due) : due;
}

std::vector<ProcessExit> LocalProcessRuntime::Reap() {
  ReapEnded();
  return std::exchange(exits_, {});
}

void LocalProcessRuntime::ReapStrays() {
  std::error_code ec;
  std::set<int> ours;
  for (const auto& [id, child] : children_) ours.insert(child.pid);
  const pid_t own_group = getpgrp();
  for (const auto& task : std::filesystem::directory_iterator("/proc/self/task", ec)) {
    std::ifstream children(task.path() / "children");
    int pid;
    while (children >> pid) {
      if (ours.count(pid)) continue;
      const std::optional<ProcStat> stat = ReadProcStat(pid);
      if (stat && stat->state == 'Z' && stat->pgrp != own_group) waitpid(pid, nullptr, WNOHANG);
    }
  }
}

void LocalProcessRuntime::ReapEnded(bool await_status) {
  RetryStaleCgroups();
  ReapStrays();
  const int64_t now = clock_->NowMs();
  for (auto it = children_.begin(); it != children_.end();) {
    Child& child = it->second;
    if (!Ended(child, now, await_status)) {
      if (!child.killed && child.kill_at_ms && now >= *child.kill_at_ms) {
        kill(-child.pid, SIGKILL);
        child.killed = true;
      }
      ++it;
      continue;
    }
    exits_.push_back(Finish(child));
    it = children_.erase(it);
  }
}

bool LocalProcessRuntime::Ended(Child& child, int64_t now, bool await_status) {
  if (!child.external) {
    siginfo_t info = {};
    return !(waitid(P_PID, child.pid, &info, WEXITED | WNOHANG | WNOWAIT) == 0 && info.si_pid == 0);
  }
  if (!child.ended_ms) {
    pollfd p{child.pidfd.get(), POLLIN, 0};
    if (poll(&p, 1, 0) != 1) return false;
    child.ended_ms = now;
  }
  return !await_status || child.external->wait_status ||
         now - *child.ended_ms >= kExternalStatusWaitMs;
}

ProcessExit LocalProcessRuntime::Finish(Child& child) {
  kill(-child.pid, SIGKILL);
  ProcessExit exit{child.id, child.pid};
  if (child.in_cgroup) {
    exit.oom_killed = cgroups_.OomKilled(child.cgroup);
    cgroups_.KillAll(child.cgroup);
  }
  std::optional<int> status;  // its wait status, if known
  if (child.external) {
    // Its parent reaps it; wait (briefly: it was just SIGKILLed) until it is gone.
    pollfd p{child.pidfd.get(), POLLIN, 0};
    while (child.pidfd.get() >= 0 && poll(&p, 1, 1000) < 0 && errno == EINTR) {
    }
    status = child.external->wait_status;
    if (!status) {
      GLOG_WARN("process runtime: exit status of %s (pid %d) not reported by its parent",
                child.id.c_str(), child.pid);
    }
  } else {
    int st = 0, r;
    while ((r = waitpid(child.pid, &st, 0)) < 0 && errno == EINTR) {
    }
    if (r >= 0) {
      status = st;
    } else {
      // Someone else reaped it (SIGCHLD ignored, or a waitpid(-1) elsewhere in the agent).
      GLOG_ERROR("process runtime: exit status of %s (pid %d) lost: %s", child.id.c_str(),
                 child.pid, strerror(errno));
    }
  }
  if (!status) {
    exit.exit_code = -1;
  } else if (WIFSIGNALED(*status)) {
    exit.exit_code = -1;
    exit.term_signal = WTERMSIG(*status);
  } else {
    exit.exit_code = WEXITSTATUS(*status);
  }
  exit.at_ms = clock_->NowMs();
  ReadStream(child.id, child.out, /*final=*/true);
  ReadStream(child.id, child.err, /*final=*/true);
  if (child.in_cgroup && !cgroups_.Remove(child.cgroup)) stale_cgroups_.insert(child.cgroup);
  return exit;
}

void LocalProcessRuntime::RetryStaleCgroups() {
  for (auto it = stale_cgroups_.begin(); it != stale_cgroups_.end();) {
    it = cgroups_.Remove(*it) ? stale_cgroups_.erase(it) : std::next(it);
  }
}

std::vector<LogLine> LocalProcessRuntime::DrainLogs() {
  for (auto& [id, child] : children_) {
    ReadStream(id, child.out, /*final=*/false);
    ReadStream(id, child.err, /*final=*/false);
  }
  return std::exchange(lines_, {});
}

void LocalProcessRuntime::ReadStream(const std::string& id, Stream& s, bool final) {
  if (s.fd.get() < 0) return;
  char buf[64 * 1024];
  bool eof = false;
  for (size_t total = 0; total < kMaxReadPerDrain;) {
    ssize_t n = read(s.fd.get(), buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      eof = n == 0;
      break;  // EOF, EAGAIN or an error
    }
    total += n;
    s.partial.append(buf, n);
    size_t start = 0;
    for (;;) {
      const size_t newline = s.partial.find('\n', start);
      const size_t end = newline == std::string::npos ? s.partial.size() : newline;
      if (end - start > kMaxLogLineBytes) {
        Emit(id, s, s.partial.substr(start, kMaxLogLineBytes));
        start += kMaxLogLineBytes;
      } else if (newline != std::string::npos) {
        Emit(id, s, s.partial.substr(start, end - start));
        start = newline + 1;
      } else {
        break;
      }
    }
    s.partial.erase(0, start);
  }
  if (eof || final) {
    if (!s.partial.empty()) Emit(id, s, std::exchange(s.partial, {}));
    s.fd.Reset();
  }
}

void LocalProcessRuntime::Emit(const std::string& id, const Stream& s, std::string text) {
  lines_.push_back(LogLine{id, s.is_stderr, std::move(text), clock_->NowMs()});
}

std::vector<std::string> LocalProcessRuntime::Running() const {
  std::vector<std::string> ids;
  for (const auto& [id, child] : children_) ids.push_back(id);
  return ids;
}

void LocalProcessRuntime::StopAll(int64_t grace_ms) {
  for (const auto& [id, child] : children_) Stop(id, grace_ms);
  // A real wait for real processes: measured on the steady clock, not on the injected one.
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(grace_ms);
  ReapEnded(/*await_status=*/false);
  while (!children_.empty() && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(kStopAllPoll);
    ReapEnded(/*await_status=*/false);
  }
  for (auto& [id, child] : children_) exits_.push_back(Finish(child));
  children_.clear();
}

}  // namespace

std::unique_ptr<ProcessRuntime> NewLocalProcessRuntime(const Clock* clock,
                                                       ProcessRuntimeOptions options) {
  return std::make_unique<LocalProcessRuntime>(clock, options);
}

}  // namespace gantry::agent
