// CriuSnapshotter: the Snapshotter that runs the CRIU binary. See criu.h for the contract.
#include "agent/snapshot/criu.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <list>
#include <mutex>
#include <sstream>
#include <system_error>
#include <thread>
#include <utility>
#include <vector>

#include "agent/snapshot/criu_binary.h"
#include "agent/snapshot/cuda_checkpoint.h"
#include "common/fd.h"
#include "common/log.h"
#include "common/procfs.h"
#include "common/subprocess.h"

namespace gantry::agent {

// The key under which a dumped tree's network namespace is left out and given back.
constexpr char kExternalNetwork[] = "gantry-netns";
namespace {

namespace fs = std::filesystem;
using SteadyClock = std::chrono::steady_clock;
using std::chrono::milliseconds;

// The lazy-pages daemon writes one byte to this descriptor once it listens (--status-fd).
constexpr int kStatusFd = 3;

// `criu_path` as given if it holds a '/' or is not found in PATH, else its PATH entry.
std::string Resolve(std::string criu_path) {
  std::string found = FindExecutable(criu_path);
  return found.empty() ? criu_path : found;
}

std::string Absolute(const std::string& dir) {
  std::error_code ec;
  fs::path p = fs::absolute(dir, ec);
  return ec ? dir : p.lexically_normal().string();
}

// Creates `dir` if needed and removes everything in it.
Status MakeEmptyDir(const std::string& dir) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) return Internal("cannot create " + dir + ": " + ec.message());
  std::vector<fs::path> entries;
  for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
    entries.push_back(it->path());
  }
  if (ec) return Internal("cannot list " + dir + ": " + ec.message());
  for (const fs::path& entry : entries) {
    fs::remove_all(entry, ec);
    if (ec) return Internal("cannot empty " + dir + ": " + entry.string() + ": " + ec.message());
  }
  return Status::Ok();
}

class CriuSnapshotter final : public Snapshotter {
 public:
  CriuSnapshotter(std::string criu_path, CriuOptions options)
      : criu_(Resolve(std::move(criu_path))), options_(options) {}
  ~CriuSnapshotter() override;

  Status Check() override {
    return CheckCriuBinary(criu_, std::min(options_.timeout_ms, kVersionTimeoutMs));
  }
  Status Dump(int pid, const std::string& dir, bool leave_running) override;
  Result<int> Restore(const std::string& dir, RestoreMode mode, int netns_fd = -1) override;

 private:
  // A `criu lazy-pages` process serving a restored tree; watched by its own thread.
  struct LazyDaemon {
    int pid = 0;
    std::string dir;
    std::thread watcher;
    bool exited = false;  // guarded by mu_; once true, pid may be reaped: never signal it
    bool reaped = false;  // guarded by mu_; the watcher is done and can be joined
  };

  // Starts `criu lazy-pages` for `dir` and waits until it listens. Returns its pid (the caller
  // must kill and reap it, or hand it to WatchLazyDaemon()).
  Result<int> StartLazyDaemon(const std::string& dir);
  // Hands the daemon `pid` to a new watcher thread, which reaps it when it exits.
  void WatchLazyDaemon(int pid, const std::string& dir);
  void RunWatcher(LazyDaemon* d);
  // Joins the watchers of daemons already reaped.
  void JoinFinishedWatchers();
  void WarnIfNotSubreaper();
  // `criu dump` of `pid` into `dir` (already emptied).
  Status RunDump(int pid, const std::string& dir, bool leave_running);
  // Whether `dir` holds suspended GPU state, once it is known to hold an image Restore() can
  // use: NotFound without an image, FailedPrecondition for GPU state this snapshotter cannot
  // resume.
  Result<bool> CheckImage(const std::string& dir);
  // `criu restore` from `dir` (for kLazy, with its lazy-pages daemon listening); the restored
  // root's pid, read from `pidfile`. DeadlineExceeded past the time limit, FailedPrecondition
  // when a pid of the dumped tree is in use, else Internal, quoting criu's log.
  Result<int> RunRestore(const std::string& dir, RestoreMode mode, const std::string& pidfile,
                         int netns_fd);

  // GPU state (CriuOptions::cuda; criu.h "GPU state"). SuspendGpu: true if it suspended the
  // GPU state of `pid`, false if there was nothing to do. FinishGpuDump: after RunDump() of a
  // suspended process: writes the marker, resumes the process if it still runs, and returns
  // Dump()'s result. ResumeGpuAfterRestore: resumes the restored `pid`, or kills it.
  Result<bool> SuspendGpu(int pid);
  Status FinishGpuDump(int pid, const std::string& dir, bool leave_running, Status dumped);
  Status ResumeGpuAfterRestore(int pid, const std::string& dir);

  const std::string criu_;
  const CriuOptions options_;
  std::atomic<bool> warned_subreaper_{false};

  std::mutex mu_;
  std::condition_variable reaped_cv_;               // signalled when a daemon is reaped
  std::list<std::unique_ptr<LazyDaemon>> daemons_;  // guarded by mu_
};

CriuSnapshotter::~CriuSnapshotter() {
  std::unique_lock<std::mutex> lock(mu_);
  const auto deadline = SteadyClock::now() + milliseconds(options_.lazy_drain_timeout_ms);
  const auto all_reaped = [this] {
    return std::all_of(daemons_.begin(), daemons_.end(),
                       [](const std::unique_ptr<LazyDaemon>& d) { return d->reaped; });
  };
  if (!reaped_cv_.wait_until(lock, deadline, all_reaped)) {
    for (const std::unique_ptr<LazyDaemon>& d : daemons_) {
      if (d->exited) continue;
      GLOG_WARN(
          "snapshot: killing criu lazy-pages (pid %d) for %s: still copying pages after "
          "%lld ms; its restored process will crash on its next missing page",
          d->pid, d->dir.c_str(), static_cast<long long>(options_.lazy_drain_timeout_ms));
      kill(d->pid, SIGKILL);
    }
  }
  std::list<std::unique_ptr<LazyDaemon>> daemons = std::move(daemons_);
  lock.unlock();
  for (const std::unique_ptr<LazyDaemon>& d : daemons) d->watcher.join();
}

Status CriuSnapshotter::Dump(int pid, const std::string& dir_arg, bool leave_running) {
  if (pid <= 0) return InvalidArgument("snapshot: bad pid " + std::to_string(pid));
  if (dir_arg.empty()) return InvalidArgument("snapshot: empty image directory");
  const std::string dir = Absolute(dir_arg);
  if (dir == "/") return InvalidArgument("snapshot: refusing to use / as the image directory");
  if (kill(pid, 0) != 0 && errno == ESRCH) {
    return NotFound("snapshot: cannot dump pid " + std::to_string(pid) + ": no such process");
  }
  GANTRY_RETURN_IF_ERROR(MakeEmptyDir(dir));
  Result<bool> gpu_suspended = SuspendGpu(pid);
  if (!gpu_suspended.ok()) return gpu_suspended.status();
  Status dumped = RunDump(pid, dir, leave_running);
  if (*gpu_suspended) return FinishGpuDump(pid, dir, leave_running, std::move(dumped));
  return dumped;
}

// The inode of `pid`'s network namespace; 0 if it cannot be read.
static ino_t NetworkNamespace(int pid) {
  struct stat st {};
  return stat(("/proc/" + std::to_string(pid) + "/ns/net").c_str(), &st) == 0 ? st.st_ino : 0;
}

Status CriuSnapshotter::RunDump(int pid, const std::string& dir, bool leave_running) {
  const std::string log = dir + "/dump.log";
  std::vector<std::string> argv = {
      criu_, "dump", "-t", std::to_string(pid), "-D", dir, "--shell-job", "-o", log, "-v4"};
  if (leave_running) argv.push_back("--leave-running");
  // A tree in a network namespace of its own (a worker's) leaves it out of the image: Restore()
  // is given one (runc does the same with its containers' namespaces).
  if (const ino_t ns = NetworkNamespace(pid); ns != 0 && ns != NetworkNamespace(getpid())) {
    argv.insert(argv.end(), {"--external", "net[" + std::to_string(ns) + "]:" + kExternalNetwork});
  }
  const auto t0 = SteadyClock::now();
  Result<SubprocessResult> r = RunProcess(argv, CriuProcessOptions(options_.timeout_ms));
  if (!r.ok()) return r.status();
  if (!r->succeeded()) {
    // Without its inventory a partial image is not taken for one (Restore says NotFound).
    std::error_code ec;
    fs::remove(dir + "/inventory.img", ec);
    std::string what = "snapshot: criu dump of pid " + std::to_string(pid) + " into " + dir + " " +
                       Describe(*r, log, options_.log_tail_lines);
    return r->timed_out ? DeadlineExceeded(std::move(what)) : Internal(std::move(what));
  }
  GLOG_DEBUG("snapshot: dumped pid %d into %s in %lld ms", pid, dir.c_str(),
             static_cast<long long>(
                 std::chrono::duration_cast<milliseconds>(SteadyClock::now() - t0).count()));
  return Status::Ok();
}

Result<int> CriuSnapshotter::StartLazyDaemon(const std::string& dir) {
  const std::string log = dir + "/lazy-pages.log";
  Fd status_r, status_w;
  GANTRY_RETURN_IF_ERROR(MakeChannel(&status_r, &status_w));
  if (fcntl(status_r.get(), F_SETFL, O_NONBLOCK) != 0) return ErrnoStatus("fcntl", errno);
  SubprocessOptions spawn_options = CriuProcessOptions(options_.timeout_ms);
  spawn_options.extra_fd = status_w.get();
  spawn_options.extra_fd_target = kStatusFd;
  Result<int> pid = SpawnProcess(
      {criu_, "lazy-pages", "-D", dir, "-o", log, "-v4", "--status-fd", std::to_string(kStatusFd)},
      spawn_options);
  if (!pid.ok()) return pid.status();
  status_w.Reset();

  // One byte once it listens; EOF if it exits first.
  const auto deadline = SteadyClock::now() + milliseconds(options_.timeout_ms);
  bool ready = false, timed_out = false;
  for (;;) {
    char c;
    const ssize_t n = read(status_r.get(), &c, 1);
    if (n == 1) {
      ready = true;
      break;
    }
    if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) break;
    const auto left = std::chrono::ceil<milliseconds>(deadline - SteadyClock::now()).count();
    if (left <= 0) {
      timed_out = true;
      break;
    }
    pollfd p = {status_r.get(), POLLIN, 0};
    poll(&p, 1, static_cast<int>(left));
  }
  if (ready) return pid;

  kill(*pid, SIGKILL);
  Result<SubprocessResult> waited = WaitProcess(*pid, -1, spawn_options);
  SubprocessResult r = waited.ok() ? std::move(*waited) : SubprocessResult{};
  r.timed_out = timed_out;
  std::string what = "snapshot: criu lazy-pages for " + dir +
                     " did not start: " + Describe(r, log, options_.log_tail_lines);
  return timed_out ? DeadlineExceeded(std::move(what)) : Internal(std::move(what));
}

void CriuSnapshotter::WatchLazyDaemon(int pid, const std::string& dir) {
  std::lock_guard<std::mutex> lock(mu_);
  auto d = std::make_unique<LazyDaemon>();
  d->pid = pid;
  d->dir = dir;
  LazyDaemon* raw = d.get();
  daemons_.push_back(std::move(d));
  raw->watcher = std::thread([this, raw] { RunWatcher(raw); });
}

void CriuSnapshotter::RunWatcher(LazyDaemon* d) {
  // Wait without reaping first: while the pid is unreaped it cannot be reused, so the
  // destructor may SIGKILL it for as long as `exited` is false.
  siginfo_t info = {};
  while (waitid(P_PID, d->pid, &info, WEXITED | WNOWAIT) != 0 && errno == EINTR) {
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    d->exited = true;
  }
  int status = 0;
  pid_t r;
  while ((r = waitpid(d->pid, &status, 0)) < 0 && errno == EINTR) {
  }
  if (r != d->pid) {
    GLOG_WARN("snapshot: criu lazy-pages (pid %d) for %s was reaped by someone else", d->pid,
              d->dir.c_str());
  } else if (WIFEXITED(status) && WEXITSTATUS(status) == 0) {
    GLOG_DEBUG("snapshot: criu lazy-pages for %s is done", d->dir.c_str());
  } else {
    GLOG_WARN("snapshot: criu lazy-pages (pid %d) for %s ended with %s; see %s/lazy-pages.log",
              d->pid, d->dir.c_str(), DescribeWaitStatus(status).c_str(), d->dir.c_str());
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    d->reaped = true;
  }
  reaped_cv_.notify_all();
}

void CriuSnapshotter::JoinFinishedWatchers() {
  std::list<std::unique_ptr<LazyDaemon>> done;
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (auto it = daemons_.begin(); it != daemons_.end();) {
      auto next = std::next(it);
      if ((*it)->reaped) done.splice(done.end(), daemons_, it);
      it = next;
    }
  }
  for (const std::unique_ptr<LazyDaemon>& d : done) d->watcher.join();
}

void CriuSnapshotter::WarnIfNotSubreaper() {
  int subreaper = 0;
  if (prctl(PR_GET_CHILD_SUBREAPER, &subreaper) == 0 && subreaper == 0 &&
      !warned_subreaper_.exchange(true)) {
    GLOG_WARN(
        "snapshot: this process is not a child subreaper "
        "(prctl(PR_SET_CHILD_SUBREAPER)); restored processes will be children of PID 1");
  }
}

Result<int> CriuSnapshotter::Restore(const std::string& dir_arg, RestoreMode mode, int netns_fd) {
  if (dir_arg.empty()) return InvalidArgument("snapshot: empty image directory");
  const std::string dir = Absolute(dir_arg);
  Result<bool> gpu_suspended = CheckImage(dir);
  if (!gpu_suspended.ok()) return gpu_suspended.status();
  JoinFinishedWatchers();
  WarnIfNotSubreaper();
  const std::string pidfile = dir + "/restore.pid";
  std::error_code ec;
  fs::remove(pidfile, ec);

  const auto t0 = SteadyClock::now();
  int daemon = 0;
  if (mode == RestoreMode::kLazy) {
    Result<int> d = StartLazyDaemon(dir);
    if (!d.ok()) return d.status();
    daemon = *d;
  }
  Result<int> pid = RunRestore(dir, mode, pidfile, netns_fd);
  if (!pid.ok()) {
    if (daemon > 0) {
      kill(daemon, SIGKILL);
      while (waitpid(daemon, nullptr, 0) < 0 && errno == EINTR) {
      }
    }
    return pid.status();
  }
  if (daemon > 0) WatchLazyDaemon(daemon, dir);
  if (*gpu_suspended) GANTRY_RETURN_IF_ERROR(ResumeGpuAfterRestore(*pid, dir));
  GLOG_DEBUG("snapshot: restored pid %d from %s (%s) in %lld ms", *pid, dir.c_str(),
             mode == RestoreMode::kLazy ? "lazy" : "full",
             static_cast<long long>(
                 std::chrono::duration_cast<milliseconds>(SteadyClock::now() - t0).count()));
  return pid;
}

Result<bool> CriuSnapshotter::CheckImage(const std::string& dir) {
  std::error_code ec;
  if (!fs::exists(dir + "/inventory.img", ec)) {
    return NotFound("snapshot: no CRIU image in " + dir + " (no inventory.img)");
  }
  const bool gpu_suspended = fs::exists(dir + "/" + kCudaSuspendedMarker, ec);
  if (!gpu_suspended) return false;
  if (options_.cuda == nullptr) {
    return FailedPrecondition("snapshot: the image in " + dir + " holds suspended GPU state (" +
                              kCudaSuspendedMarker +
                              ") and this snapshotter has no CUDA checkpointer");
  }
  if (Status a = options_.cuda->Available(); !a.ok()) {
    return FailedPrecondition(
        "snapshot: the image in " + dir +
        " holds suspended GPU state, which cannot be resumed here: " + a.message());
  }
  return true;
}

Result<int> CriuSnapshotter::RunRestore(const std::string& dir, RestoreMode mode,
                                        const std::string& pidfile, int netns_fd) {
  const std::string log = dir + "/restore.log";
  std::vector<std::string> argv = {criu_,
                                   "restore",
                                   "-D",
                                   dir,
                                   "--shell-job",
                                   "--manage-cgroups=ignore",
                                   "--restore-detached",
                                   "--pidfile",
                                   pidfile,
                                   "-o",
                                   log,
                                   "-v4"};
  if (mode == RestoreMode::kLazy) argv.push_back("--lazy-pages");
  SubprocessOptions o = CriuProcessOptions(options_.timeout_ms);
  if (netns_fd >= 0) {  // the namespace Dump() left out (kExternalNetwork), handed to criu as fd 3
    o.extra_fd = netns_fd;
    o.extra_fd_target = 3;
    argv.insert(argv.end(), {"--inherit-fd", std::string("fd[3]:") + kExternalNetwork});
  }
  Result<SubprocessResult> r = RunProcess(argv, o);
  if (!r.ok()) return r.status();
  if (!r->succeeded()) {
    std::string what =
        "snapshot: criu restore from " + dir + " " + Describe(*r, log, options_.log_tail_lines);
    if (mode == RestoreMode::kLazy) {
      what += "\nend of " + LogTail(dir + "/lazy-pages.log", options_.log_tail_lines);
    }
    if (r->timed_out) return DeadlineExceeded(std::move(what));
    if (what.find("Can't fork for") != std::string::npos) {
      return FailedPrecondition(
          "a pid of the dumped tree is in use (kill and reap the original before restoring): " +
          what);
    }
    return Internal(std::move(what));
  }
  int pid = 0;
  std::ifstream in(pidfile);
  if (!(in >> pid) || pid <= 0) {
    return Internal("snapshot: criu restore from " + dir + " succeeded but left no pid in " +
                    pidfile);
  }
  return pid;
}

// --- GPU state (CriuOptions::cuda) ------------------------------------------------------------

Result<bool> CriuSnapshotter::SuspendGpu(int pid) {
  if (options_.cuda == nullptr) return false;
  const std::string who = "pid " + std::to_string(pid);
  if (Status a = options_.cuda->Available(); !a.ok()) {
    // No usable driver here: nothing can be suspended; a process holding GPU state anyway
    // makes criu fail with its own error.
    GLOG_DEBUG("snapshot: not checking %s for GPU state: %s", who.c_str(), a.message().c_str());
    return false;
  }
  Result<ProcessGpuState> state = options_.cuda->State(pid);
  if (!state.ok()) {
    return Status(state.status().code(),
                  "snapshot: cannot dump " + who +
                      ": cannot tell whether it holds GPU state: " + state.status().message());
  }
  switch (*state) {
    case ProcessGpuState::kNone:
      return false;
    case ProcessGpuState::kCheckpointed:
      // Suspended by someone else: dumped as it is; Restore() leaves it suspended too.
      GLOG_INFO("snapshot: %s has its GPU state suspended already; dumping it as it is",
                who.c_str());
      return false;
    case ProcessGpuState::kLocked:
    case ProcessGpuState::kFailed:
      return FailedPrecondition("snapshot: cannot dump " + who + ": its GPU state is " +
                                ProcessGpuStateName(*state) +
                                " (another checkpoint is in progress or failed); nothing done");
    case ProcessGpuState::kRunning:
      break;
  }
  if (const char st = ProcState(pid); st == 'T' || st == 't') {
    return FailedPrecondition(
        "snapshot: cannot dump " + who +
        ": it holds a CUDA context and is stopped; the CUDA driver suspends GPU state through "
        "a thread inside the process, so it must be running (dump it before stopping it); "
        "nothing done");
  }
  const auto t0 = SteadyClock::now();
  if (Status s = options_.cuda->Suspend(pid, options_.timeout_ms); !s.ok()) {
    // A lock that timed out leaves the process running as before: its GPU was busy; retry
    // later (DeadlineExceeded would tell the caller to kill it).
    const Code code = s.code() == Code::kDeadlineExceeded ? Code::kUnavailable : s.code();
    return Status(
        code, "snapshot: cannot dump " + who + ": suspending its GPU state failed: " + s.message());
  }
  GLOG_DEBUG("snapshot: suspended the GPU state of %s in %lld ms", who.c_str(),
             static_cast<long long>(
                 std::chrono::duration_cast<milliseconds>(SteadyClock::now() - t0).count()));
  return true;
}

Status CriuSnapshotter::FinishGpuDump(int pid, const std::string& dir, bool leave_running,
                                      Status dumped) {
  const std::string who = "pid " + std::to_string(pid);
  const std::string marker = dir + "/" + kCudaSuspendedMarker;
  std::error_code ec;
  if (dumped.ok()) {
    std::ofstream out(marker);
    out << "pid " << pid << "\n";
    out.close();
    if (!out) {
      fs::remove(dir + "/inventory.img", ec);
      dumped = Internal("snapshot: cannot write " + marker);
    }
  }
  if (!dumped.ok() && dumped.code() == Code::kDeadlineExceeded) {
    // criu was killed mid-dump: the process may still be frozen, and the driver's restore would
    // then block for good. Dump()'s contract already says to kill it.
    return Status(dumped.code(), dumped.message() + "; its GPU state stays suspended");
  }
  if (dumped.ok() && !leave_running) return dumped;  // criu killed the process
  // The process runs on (leave_running, or the dump failed): give it its GPU back.
  if (Status s = options_.cuda->Resume(pid); !s.ok()) {
    if (!dumped.ok()) {
      return Status(dumped.code(), dumped.message() + "; resuming the GPU state of " + who +
                                       " failed too: " + s.message());
    }
    // The image is complete, but the process left running is stuck: say so, and keep
    // Dump()'s contract (no usable image on error).
    fs::remove(dir + "/inventory.img", ec);
    fs::remove(marker, ec);
    return Internal("snapshot: dumped " + who + " into " + dir +
                    ", but resuming its GPU state failed (its CUDA calls stay blocked: kill it; "
                    "the image was discarded): " +
                    s.message());
  }
  return dumped;
}

Status CriuSnapshotter::ResumeGpuAfterRestore(int pid, const std::string& dir) {
  const auto t0 = SteadyClock::now();
  Status s = options_.cuda->Resume(pid);
  if (s.ok()) {
    GLOG_DEBUG("snapshot: resumed the GPU state of restored pid %d in %lld ms", pid,
               static_cast<long long>(
                   std::chrono::duration_cast<milliseconds>(SteadyClock::now() - t0).count()));
    return s;
  }
  // Restore()'s contract: on error nothing of the tree is left running. The restored process is
  // our child if we are a subreaper (then reap it here, nobody else knows its pid), else PID 1's.
  kill(pid, SIGKILL);
  const auto deadline = SteadyClock::now() + milliseconds(5000);
  while (SteadyClock::now() < deadline) {
    const pid_t r = waitpid(pid, nullptr, WNOHANG);
    if (r == pid || (r < 0 && errno == ECHILD)) break;
    std::this_thread::sleep_for(milliseconds(2));
  }
  return Status(s.code(),
                "snapshot: restored pid " + std::to_string(pid) + " from " + dir +
                    ", but resuming its GPU state failed, so it was killed: " + s.message());
}

}  // namespace

std::unique_ptr<Snapshotter> NewCriuSnapshotter(std::string criu_path, CriuOptions options) {
  return std::make_unique<CriuSnapshotter>(std::move(criu_path), options);
}

}  // namespace gantry::agent
