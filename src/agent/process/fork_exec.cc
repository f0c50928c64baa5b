// The child's side of LocalProcessRuntime::Start(), and the parent's end of the protocol. See
// fork_exec.h for the contract.
#include "agent/process/fork_exec.h"

#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>

namespace gantry::agent {
namespace {

// Used when neither the spec's env nor the agent has a PATH.
constexpr char kDefaultPath[] = "/usr/local/bin:/usr/bin:/bin";

// Where the child may find argv[0], in order (as execvp searches, minus its /bin/sh fallback).
std::vector<std::string> ExecCandidates(const ProcessSpec& spec) {
  const std::string& name = spec.argv[0];
  if (name.find('/') != std::string::npos) return {name};
  std::string path = kDefaultPath;
  if (auto it = spec.env.find("PATH"); it != spec.env.end()) {
    path = it->second;
  } else if (const char* own = getenv("PATH")) {
    path = own;
  }
  std::vector<std::string> out;
  size_t start = 0;
  while (start <= path.size()) {
    size_t end = std::min(path.find(':', start), path.size());
    if (end > start) out.push_back(path.substr(start, end - start) + "/" + name);
    start = end + 1;
  }
  return out;
}

// In the child: waits for `go`, redirects stdio, chdirs and execs. Returns only on failure.
ExecFailure ExecChild(const ChildPlan& plan) {
  char byte;
  ssize_t n;
  while ((n = read(plan.go, &byte, 1)) < 0 && errno == EINTR) {
  }
  if (n != 1) return {ExecFailure::kSetup, n == 0 ? EPIPE : errno};  // the parent gave up
  if (dup2(plan.dev_null, STDIN_FILENO) < 0 || dup2(plan.out, STDOUT_FILENO) < 0 ||
      dup2(plan.err, STDERR_FILENO) < 0) {
    return {ExecFailure::kSetup, errno};
  }
  // Descriptors the agent opened without O_CLOEXEC must not leak into the worker.
  close_range(STDERR_FILENO + 1, ~0U, CLOSE_RANGE_CLOEXEC);
  // Whatever umask the agent runs with, a worker starts with the usual one.
  umask(022);
  if (plan.view) {
    int step = -1;
    if (int err = plan.view->Enter(&step)) return {ExecFailure::kView, err, step};
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) return {ExecFailure::kView, errno};
    const rlimit nproc{static_cast<rlim_t>(plan.view_nproc), static_cast<rlim_t>(plan.view_nproc)};
    if (plan.view_nproc > 0 && setrlimit(RLIMIT_NPROC, &nproc) != 0) {
      return {ExecFailure::kView, errno};
    }
  }
  if (plan.netns >= 0 && setns(plan.netns, CLONE_NEWNET) != 0) {
    return {ExecFailure::kNetwork, errno};
  }
  if (plan.uid >= 0) {
    // Raw system calls: glibc's wrappers would signal the agent's other threads, which do not
    // exist in this child. Groups first, while this process may still change them.
    const gid_t gid = static_cast<gid_t>(plan.gid);
    if (syscall(SYS_setgroups, 1, &gid) != 0 || syscall(SYS_setresgid, gid, gid, gid) != 0 ||
        syscall(SYS_setresuid, plan.uid, plan.uid, plan.uid) != 0 ||
        prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) {
      return {ExecFailure::kUser, errno};
    }
    // A change of user clears the parent-death signal: set it again.
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != plan.parent) _exit(127);
  }
  if (plan.workdir && chdir(plan.workdir) != 0) return {ExecFailure::kChdir, errno};
  int err = ENOENT;
  bool denied = false;
  for (const char* candidate : plan.candidates) {
    execve(candidate, plan.argv.data(), plan.envp.data());
    err = errno;
    if (err == EACCES) {
      denied = true;
    } else if (err != ENOENT && err != ENOTDIR) {
      break;
    }
  }
  return {ExecFailure::kExec, denied && (err == ENOENT || err == ENOTDIR) ? EACCES : err};
}

}  // namespace

Status FillChildPlan(const ProcessSpec& spec, std::vector<std::string>* candidates,
                     std::vector<std::string>* env, ViewPlan* view, ChildPlan* plan) {
  *candidates = ExecCandidates(spec);
  for (const auto& [key, value] : spec.env) {
    if (key.empty() || key.find('=') != std::string::npos) {
      return InvalidArgument("process " + spec.id + ": bad environment variable name '" + key +
                             "'");
    }
    env->push_back(key + "=" + value);
  }
  for (const std::string& c : *candidates) plan->candidates.push_back(c.c_str());
  for (const std::string& a : spec.argv) plan->argv.push_back(const_cast<char*>(a.c_str()));
  plan->argv.push_back(nullptr);
  for (std::string& e : *env) plan->envp.push_back(e.data());
  plan->envp.push_back(nullptr);
  if (!spec.workdir.empty()) plan->workdir = spec.workdir.c_str();
  if ((spec.uid >= 0) != (spec.gid >= 0)) {
    return InvalidArgument("process " + spec.id + ": a user needs a group, and a group a user");
  }
  plan->uid = spec.uid;
  plan->gid = spec.gid;
  plan->netns = spec.netns_fd;
  if (spec.view) {
    if (spec.uid >= 0 || spec.netns_fd >= 0) {
      return InvalidArgument("process " + spec.id +
                             ": a mount view keeps the agent's user and makes its own namespaces");
    }
    GANTRY_RETURN_IF_ERROR(view->Prepare(*spec.view));
    plan->view = view;
    plan->view_nproc = spec.pids_max;
  }
  return Status::Ok();
}

int ForkChild(const ChildPlan& plan) {
  if (!plan.view) return fork();
  // The raw system call returns in the child as fork() does (no new stack). The child calls
  // nothing of glibc's that depends on its thread state (RunChild()).
  return static_cast<int>(
      syscall(SYS_clone, kViewCloneFlags | SIGCHLD, nullptr, nullptr, nullptr, 0));
}

Status ChildChannels::Open(ChildPlan* plan) {
  int null_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
  if (null_fd < 0) return ErrnoStatus("open /dev/null", errno);
  GANTRY_RETURN_IF_ERROR(LiftFd(null_fd, STDERR_FILENO + 1, &dev_null));
  GANTRY_RETURN_IF_ERROR(MakeChannel(&out_r, &out_w));
  GANTRY_RETURN_IF_ERROR(MakeChannel(&err_r, &err_w));
  GANTRY_RETURN_IF_ERROR(MakeChannel(&go_r, &go_w, /*socket=*/true));
  GANTRY_RETURN_IF_ERROR(MakeChannel(&report_r, &report_w));
  plan->dev_null = dev_null.get();
  plan->out = out_w.get();
  plan->err = err_w.get();
  plan->go = go_r.get();
  plan->report = report_w.get();
  return Status::Ok();
}

void ChildChannels::CloseChildEnds() {
  dev_null.Reset();
  out_w.Reset();
  err_w.Reset();
  go_r.Reset();
  report_w.Reset();
}

[[noreturn]] void RunChild(const ChildPlan& plan) {
  setsid();
  // A worker dies with its agent (SIGKILL when the forking thread or process ends), so that a
  // restarted agent never finds its workers still running under another parent and starts them
  // a second time. The server requeues what they held.
  prctl(PR_SET_PDEATHSIG, SIGKILL);
  // The agent died before prctl took effect. (In a PID namespace of its own the parent is not
  // visible; a dead agent's `go` socket reads EOF instead.)
  if (!plan.view && getppid() != plan.parent) _exit(127);
  // Signal dispositions set to SIG_IGN and the signal mask survive exec(); give the worker the
  // defaults rather than whatever the agent uses.
  sigset_t none;
  sigemptyset(&none);
  sigprocmask(SIG_SETMASK, &none, nullptr);
  struct sigaction dfl = {};
  dfl.sa_handler = SIG_DFL;
  for (int sig = 1; sig < NSIG; ++sig) sigaction(sig, &dfl, nullptr);
  if (plan.nice != 0) setpriority(PRIO_PROCESS, 0, plan.nice);

  const ExecFailure failure = ExecChild(plan);
  ssize_t ignored = write(plan.report, &failure, sizeof failure);
  (void)ignored;
  _exit(127);
}

Status ReleaseChild(Fd* go, int report_fd, const ProcessSpec& spec, const ViewPlan* view) {
  const char byte = 1;
  ssize_t n;
  while ((n = send(go->get(), &byte, 1, MSG_NOSIGNAL)) < 0 && errno == EINTR) {
  }
  go->Reset();
  if (n != 1) return ErrnoStatus("process " + spec.id + ": releasing the child", errno);
  ExecFailure failure{};
  while ((n = read(report_fd, &failure, sizeof failure)) < 0 && errno == EINTR) {
  }
  if (n == static_cast<ssize_t>(sizeof failure)) {
    const std::string what =
        failure.stage == ExecFailure::kSetup     ? "child setup"
        : failure.stage == ExecFailure::kUser    ? "running as uid " + std::to_string(spec.uid)
        : failure.stage == ExecFailure::kChdir   ? "workdir " + spec.workdir
        : failure.stage == ExecFailure::kNetwork ? std::string("joining its network namespace")
        : failure.stage == ExecFailure::kView && view
            ? "making its mount view: " + view->Describe(failure.step)
            : "cannot run '" + spec.argv[0] + "'";
    return ErrnoStatus("process " + spec.id + ": " + what, failure.err);
  }
  if (n != 0) return Internal("process " + spec.id + ": bad report from the child");
  return Status::Ok();  // EOF: it exec'd
}

}  // namespace gantry::agent
