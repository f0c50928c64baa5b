// Running a helper binary to completion. See subprocess.h for the contract.
#include "common/subprocess.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdlib>

#include "common/fd.h"

namespace gantry {
namespace {

using SteadyClock = std::chrono::steady_clock;
using std::chrono::milliseconds;

// Descriptors handed to a child sit at or above this while it is spawned, so that its dup2()s
// onto 0..extra_fd_target cannot clobber them (an agent started with stdio closed gets low ones).
constexpr int kLowestParentFd = 10;
// How often a wait looks at a cancel flag.
constexpr int kCancelPollMs = 50;
// How often a wait looks at the child without a pidfd (Linux < 5.3).
constexpr int kNoPidfdPollMs = 2;
// How often a wait looks at a child it has SIGKILLed.
constexpr int kKilledPollMs = 100;

// `fd` if it is above `floor` (or < 0), else a close-on-exec duplicate of it above `floor`,
// owned by *holder.
Result<int> AboveFloor(int fd, int floor, Fd* holder) {
  if (fd < 0 || fd > floor) return fd;
  const int lifted = fcntl(fd, F_DUPFD_CLOEXEC, std::max(kLowestParentFd, floor + 1));
  if (lifted < 0) return ErrnoStatus("fcntl(F_DUPFD_CLOEXEC)", errno);
  holder->Reset(lifted);
  return lifted;
}

// Splits output into lines for SubprocessOptions::on_line and keeps its end.
class OutputSink {
 public:
  OutputSink(const SubprocessOptions& options, std::string* output)
      : options_(options), output_(output) {}

  void Append(const char* data, size_t n) {
    output_->append(data, n);
    if (output_->size() > options_.max_output) {
      output_->erase(0, output_->size() - options_.max_output);
    }
    if (!options_.on_line) return;
    partial_.append(data, n);
    size_t start = 0;
    for (size_t nl; (nl = partial_.find('\n', start)) != std::string::npos; start = nl + 1) {
      Emit(std::string_view(partial_).substr(start, nl - start));
    }
    partial_.erase(0, start);
    if (partial_.size() > options_.max_output) {  // a "line" without end: pass it on in pieces
      Emit(partial_);
      partial_.clear();
    }
  }

  // Passes on a last line without '\n'.
  void Flush() {
    if (!partial_.empty()) Emit(partial_);
    partial_.clear();
  }

 private:
  void Emit(std::string_view line) {
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    options_.on_line(line);
  }

  const SubprocessOptions& options_;
  std::string* const output_;
  std::string partial_;
};

}  // namespace

int SubprocessResult::exit_code() const {
  return WIFEXITED(wait_status) ? WEXITSTATUS(wait_status) : -1;
}

bool SubprocessResult::succeeded() const {
  return !timed_out && !cancelled && WIFEXITED(wait_status) && WEXITSTATUS(wait_status) == 0;
}

std::string FindExecutable(const std::string& name) {
  if (name.find('/') != std::string::npos) return name;
  const char* env = std::getenv("PATH");
  std::string dirs = std::string(env ? env : "") + ":" + kSystemPath;
  size_t start = 0;
  while (start <= dirs.size()) {
    const size_t end = std::min(dirs.find(':', start), dirs.size());
    if (end > start) {
      const std::string candidate = dirs.substr(start, end - start) + "/" + name;
      struct stat st {};
      if (stat(candidate.c_str(), &st) == 0 && S_ISREG(st.st_mode) &&
          access(candidate.c_str(), X_OK) == 0) {
        return candidate;
      }
    }
    start = end + 1;
  }
  return "";
}

std::string DescribeWaitStatus(int wait_status) {
  if (WIFEXITED(wait_status)) return "exit code " + std::to_string(WEXITSTATUS(wait_status));
  if (WIFSIGNALED(wait_status)) return "killed by signal " + std::to_string(WTERMSIG(wait_status));
  return "wait status " + std::to_string(wait_status);
}

Result<int> SpawnProcess(const std::vector<std::string>& argv, const SubprocessOptions& options,
                         int out_fd) {
  if (argv.empty()) return InvalidArgument("SpawnProcess: empty argv");
  const bool has_extra = options.extra_fd >= 0;
  if (has_extra && options.extra_fd_target < 3) {
    return InvalidArgument("SpawnProcess: extra_fd_target " +
                           std::to_string(options.extra_fd_target) + " is below 3");
  }
  const int top = has_extra ? options.extra_fd_target : 2;
  Fd out_holder, extra_holder;
  Result<int> out = AboveFloor(out_fd, top, &out_holder);
  if (!out.ok()) return out.status();
  Result<int> extra = AboveFloor(options.extra_fd, top, &extra_holder);
  if (!extra.ok()) return extra.status();

  std::vector<char*> args;
  for (const std::string& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  std::vector<char*> env;
  for (const std::string& e : options.env) env.push_back(const_cast<char*>(e.c_str()));
  env.push_back(nullptr);

  posix_spawn_file_actions_t actions;
  posix_spawnattr_t attr;
  posix_spawn_file_actions_init(&actions);
  posix_spawnattr_init(&attr);
  posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
  if (*out >= 0) {
    posix_spawn_file_actions_adddup2(&actions, *out, 1);
    posix_spawn_file_actions_adddup2(&actions, *out, 2);
  } else {
    posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0);
    posix_spawn_file_actions_adddup2(&actions, 1, 2);
  }
  if (has_extra) {
    posix_spawn_file_actions_adddup2(&actions, *extra, options.extra_fd_target);
    // glibc ignores EBADF here: most of these are not open.
    for (int fd = 3; fd < options.extra_fd_target; ++fd) {
      posix_spawn_file_actions_addclose(&actions, fd);
    }
  }
  // The caller's other descriptors (sockets, other children's pipes) stay out of the child.
  posix_spawn_file_actions_addclosefrom_np(&actions, top + 1);

  sigset_t none, all;
  sigemptyset(&none);
  sigfillset(&all);
  posix_spawnattr_setsigmask(&attr, &none);
  posix_spawnattr_setsigdefault(&attr, &all);
  posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);

  pid_t pid = 0;
  const int rc = posix_spawn(&pid, argv[0].c_str(), &actions, &attr, args.data(), env.data());
  posix_spawn_file_actions_destroy(&actions);
  posix_spawnattr_destroy(&attr);
  if (rc != 0) {
    return Status(rc == ENOENT ? Code::kFailedPrecondition : Code::kInternal,
                  "cannot run " + argv[0] + ": " + ErrnoText(rc));
  }
  return static_cast<int>(pid);
}

Result<SubprocessResult> WaitProcess(int pid, int out_fd, const SubprocessOptions& options) {
  SubprocessResult result;
  OutputSink sink(options, &result.output);
  bool out_open = out_fd >= 0;
  if (out_open) {
    const int flags = fcntl(out_fd, F_GETFL);
    if (flags < 0 || fcntl(out_fd, F_SETFL, flags | O_NONBLOCK) != 0) {
      return ErrnoStatus("fcntl", errno);
    }
  }
  char buf[8192];
  auto read_out = [&] {
    for (;;) {
      const ssize_t n = read(out_fd, buf, sizeof buf);
      if (n > 0) {
        sink.Append(buf, static_cast<size_t>(n));
        continue;
      }
      if (n < 0 && errno == EINTR) continue;
      if (n == 0 || errno != EAGAIN) out_open = false;
      return;
    }
  };

  // A pidfd becomes readable when the child exits, so poll() wakes at once; without one (Linux
  // < 5.3), poll every kNoPidfdPollMs.
  Fd pidfd(static_cast<int>(syscall(SYS_pidfd_open, pid, 0)));
  const auto deadline = SteadyClock::now() + milliseconds(options.timeout_ms);
  bool killed = false;
  int status = 0;
  for (;;) {
    const pid_t r = waitpid(pid, &status, WNOHANG);
    if (r == pid) break;
    if (r < 0 && errno != EINTR) {
      return Internal("waiting for pid " + std::to_string(pid) + ": " + ErrnoText(errno) +
                      " (is something else in this process reaping children?)");
    }
    const auto now = SteadyClock::now();
    if (!killed && (now >= deadline || (options.cancel && options.cancel->load()))) {
      kill(pid, SIGKILL);
      killed = true;
      (now >= deadline ? result.timed_out : result.cancelled) = true;
    }
    int wait_ms = killed
                      ? kKilledPollMs
                      : static_cast<int>(std::chrono::ceil<milliseconds>(deadline - now).count());
    if (options.cancel) wait_ms = std::min(wait_ms, kCancelPollMs);
    if (pidfd.get() < 0) wait_ms = std::min(wait_ms, kNoPidfdPollMs);
    pollfd fds[2];
    nfds_t n = 0;
    if (pidfd.get() >= 0) fds[n++] = {pidfd.get(), POLLIN, 0};
    if (out_open) fds[n++] = {out_fd, POLLIN, 0};
    poll(fds, n, std::max(wait_ms, 0));
    if (out_open) read_out();
  }
  if (out_open) read_out();
  sink.Flush();
  result.wait_status = status;
  return result;
}

Result<SubprocessResult> RunProcess(const std::vector<std::string>& argv,
                                    const SubprocessOptions& options) {
  Fd out_r, out_w;
  GANTRY_RETURN_IF_ERROR(MakeChannel(&out_r, &out_w, /*socket=*/false,
                                     std::max(kLowestParentFd, options.extra_fd_target + 1)));
  Result<int> pid = SpawnProcess(argv, options, out_w.get());
  if (!pid.ok()) return pid.status();
  out_w.Reset();
  return WaitProcess(*pid, out_r.get(), options);
}

}  // namespace gantry
