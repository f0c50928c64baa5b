#include "agent/process/process_runtime.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <fstream>
#include <optional>
#include <set>
#include <sstream>
#include <thread>

#include "agent/process/fake_process_runtime.h"
#include "common/procfs.h"

namespace gantry::agent {
namespace {

using std::chrono::milliseconds;
using std::chrono::steady_clock;

int64_t MsSince(steady_clock::time_point t0) {
  return std::chrono::duration_cast<milliseconds>(steady_clock::now() - t0).count();
}

// Dead: no /proc entry, or a zombie (orphans are reaped by PID 1, slowly on some hosts).
bool IsDead(int pid) {
  std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
  std::string text((std::istreambuf_iterator<char>(stat)), std::istreambuf_iterator<char>());
  size_t paren = text.rfind(')');
  return paren == std::string::npos || text.size() < paren + 3 || text[paren + 2] == 'Z' ||
         text[paren + 2] == 'X';
}

bool WaitDead(int pid, int timeout_ms = 3000) {
  auto t0 = steady_clock::now();
  while (!IsDead(pid)) {
    if (MsSince(t0) > timeout_ms) return false;
    std::this_thread::sleep_for(milliseconds(5));
  }
  return true;
}

std::string ReadAll(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

class ProcessRuntimeTest : public ::testing::Test {
 protected:
  void SetUp() override { rt_ = NewLocalProcessRuntime(&clock_, {}); }

  void TearDown() override {
    rt_.reset();
    // Every child was reaped: this test process has none left, zombie or not.
    EXPECT_EQ(waitpid(-1, nullptr, WNOHANG), -1);
    EXPECT_EQ(errno, ECHILD);
  }

  // Ids unique to this test process, so that concurrent runs do not share cgroups.
  static std::string Id(const std::string& name) {
    return "t" + std::to_string(getpid()) + "-" + name;
  }

  static ProcessSpec Sh(const std::string& name, const std::string& script) {
    ProcessSpec spec;
    spec.id = Id(name);
    spec.argv = {"/bin/sh", "-c", script};
    spec.env = {{"PATH", "/usr/bin:/bin"}};
    return spec;
  }

  // Reaps (and drains logs) until `id` exits; nullopt after timeout_ms.
  std::optional<ProcessExit> WaitExit(const std::string& id, int timeout_ms = 5000) {
    auto t0 = steady_clock::now();
    for (;;) {
      for (ProcessExit& e : rt_->Reap()) exits_.push_back(e);
      Drain();
      for (const ProcessExit& e : exits_) {
        if (e.id == id) return e;
      }
      if (MsSince(t0) > timeout_ms) return std::nullopt;
      std::this_thread::sleep_for(milliseconds(2));
    }
  }

  // Drains logs until `id` has printed `text` on stdout.
  bool WaitLine(const std::string& id, const std::string& text, int timeout_ms = 5000) {
    auto t0 = steady_clock::now();
    for (;;) {
      Drain();
      auto lines = Lines(id, false);
      if (std::find(lines.begin(), lines.end(), text) != lines.end()) return true;
      if (MsSince(t0) > timeout_ms) return false;
      std::this_thread::sleep_for(milliseconds(2));
    }
  }

  // Calls Reap() until `pid` is gone from /proc (reaped); false after 3 s.
  bool ReapedSoon(int pid) {
    auto t0 = steady_clock::now();
    while (access(("/proc/" + std::to_string(pid)).c_str(), F_OK) == 0) {
      if (MsSince(t0) > 3000) return false;
      for (ProcessExit& e : rt_->Reap()) exits_.push_back(e);
      std::this_thread::sleep_for(milliseconds(5));
    }
    return true;
  }

  void Drain() {
    for (LogLine& l : rt_->DrainLogs()) lines_.push_back(l);
  }

  std::vector<std::string> Lines(const std::string& id, bool stderr_stream) const {
    std::vector<std::string> out;
    for (const LogLine& l : lines_) {
      if (l.id == id && l.stderr_stream == stderr_stream) out.push_back(l.text);
    }
    return out;
  }

  SystemClock clock_;
  std::unique_ptr<ProcessRuntime> rt_;
  std::vector<ProcessExit> exits_;
  std::vector<LogLine> lines_;
};

TEST_F(ProcessRuntimeTest, EnvironmentIsExactlyTheSpecs) {
  setenv("GANTRY_AGENT_ONLY", "1", 1);
  ProcessSpec spec;
  spec.id = Id("env");
  spec.argv = {"env"};  // found through the PATH in spec.env
  spec.env = {{"PATH", "/usr/bin:/bin"}, {"FOO", "bar baz"}, {"EMPTY", ""}};
  ASSERT_TRUE(rt_->Start(spec).ok());
  auto exit = WaitExit(spec.id);
  ASSERT_TRUE(exit);
  EXPECT_EQ(exit->exit_code, 0);
  auto lines = Lines(spec.id, false);
  std::sort(lines.begin(), lines.end());
  EXPECT_EQ(lines, (std::vector<std::string>{"EMPTY=", "FOO=bar baz", "PATH=/usr/bin:/bin"}));
}

TEST_F(ProcessRuntimeTest, NiceValueApplied) {
  ProcessSpec spec = Sh("nice", "nice");  // coreutils' nice prints the niceness
  spec.nice = 7;
  ASSERT_TRUE(rt_->Start(spec).ok());
  ASSERT_TRUE(WaitExit(spec.id));
  EXPECT_EQ(Lines(spec.id, false), std::vector<std::string>{"7"});
}

TEST_F(ProcessRuntimeTest, ProgramFoundInAgentPathWhenEnvHasNone) {
  ProcessSpec spec;
  spec.id = Id("path");
  spec.argv = {"sh", "-c", "echo ok"};
  ASSERT_TRUE(rt_->Start(spec).ok());
  ASSERT_TRUE(WaitExit(spec.id));
  EXPECT_EQ(Lines(spec.id, false), std::vector<std::string>{"ok"});
}

TEST_F(ProcessRuntimeTest, WorkdirHonoured) {
  char dir[] = "/tmp/gantry-workdir-XXXXXX";
  ASSERT_NE(mkdtemp(dir), nullptr);
  ProcessSpec spec = Sh("pwd", "pwd");
  spec.workdir = dir;
  ASSERT_TRUE(rt_->Start(spec).ok());
  ASSERT_TRUE(WaitExit(spec.id));
  EXPECT_EQ(Lines(spec.id, false), std::vector<std::string>{dir});
  rmdir(dir);

  spec.workdir = std::string(dir) + "/missing";
  Result<int> pid = rt_->Start(spec);
  EXPECT_EQ(pid.status().code(), Code::kNotFound) << pid.status().ToString();
  EXPECT_NE(pid.status().message().find("workdir"), std::string::npos);
  EXPECT_TRUE(rt_->Running().empty());
}

TEST_F(ProcessRuntimeTest, StdoutAndStderrSeparatedAndPartialLinesJoined) {
  ProcessSpec spec = Sh("streams", "printf par; sleep 0.1; printf 'tial\\nlast'; echo oops >&2");
  ASSERT_TRUE(rt_->Start(spec).ok());
  ASSERT_TRUE(WaitExit(spec.id));
  EXPECT_EQ(Lines(spec.id, false), (std::vector<std::string>{"partial", "last"}));
  EXPECT_EQ(Lines(spec.id, true), std::vector<std::string>{"oops"});
}

TEST_F(ProcessRuntimeTest, LongLinesSplit) {
  ProcessSpec spec = Sh("long",
                        "head -c 40000 /dev/zero | tr '\\0' x; echo;"
                        "head -c 16384 /dev/zero | tr '\\0' y; echo");
  ASSERT_TRUE(rt_->Start(spec).ok());
  ASSERT_TRUE(WaitExit(spec.id));
  EXPECT_EQ(
      Lines(spec.id, false),
      (std::vector<std::string>{std::string(16384, 'x'), std::string(16384, 'x'),
                                std::string(40000 - 2 * 16384, 'x'), std::string(16384, 'y')}));
}

TEST_F(ProcessRuntimeTest, ExitCodeReportedAndChildReaped) {
  ProcessSpec spec = Sh("exit7", "exit 7");
  Result<int> pid = rt_->Start(spec);
  ASSERT_TRUE(pid.ok());
  EXPECT_EQ(rt_->Running(), std::vector<std::string>{spec.id});
  auto exit = WaitExit(spec.id);
  ASSERT_TRUE(exit);
  EXPECT_EQ(exit->pid, *pid);
  EXPECT_EQ(exit->exit_code, 7);
  EXPECT_EQ(exit->term_signal, 0);
  EXPECT_FALSE(exit->oom_killed);
  EXPECT_TRUE(rt_->Running().empty());
  EXPECT_NE(access(("/proc/" + std::to_string(*pid)).c_str(), F_OK), 0);
}

TEST_F(ProcessRuntimeTest, SignalReported) {
  ProcessSpec spec = Sh("selfkill", "kill -KILL $$");
  ASSERT_TRUE(rt_->Start(spec).ok());
  auto exit = WaitExit(spec.id);
  ASSERT_TRUE(exit);
  EXPECT_EQ(exit->exit_code, -1);
  EXPECT_EQ(exit->term_signal, SIGKILL);
}

TEST_F(ProcessRuntimeTest, StopTermsTheWholeGroup) {
  ProcessSpec spec = Sh("group", "sleep 100 & echo $!; wait");
  ASSERT_TRUE(rt_->Start(spec).ok());
  auto t0 = steady_clock::now();
  while (Lines(spec.id, false).empty() && MsSince(t0) < 5000) Drain();
  ASSERT_EQ(Lines(spec.id, false).size(), 1u);
  const int grandchild = std::stoi(Lines(spec.id, false)[0]);

  rt_->Stop(spec.id, 10'000);
  auto exit = WaitExit(spec.id, 3000);
  ASSERT_TRUE(exit);
  EXPECT_EQ(exit->term_signal, SIGTERM);
  EXPECT_TRUE(WaitDead(grandchild));
  EXPECT_TRUE(ReapedSoon(grandchild));  // an orphan of the worker: re-parented to us
}

// A worker leads its own session (and so its own process group): CRIU refuses to checkpoint a
// process whose session leader is outside its pid namespace, which is where the agent's session
// leader is when the agent runs in a container or a CI sandbox.
TEST_F(ProcessRuntimeTest, WorkerLeadsItsOwnSession) {
  ProcessSpec spec = Sh("session", "echo ready; exec sleep 100");
  auto pid = rt_->Start(spec);
  ASSERT_TRUE(pid.ok());
  EXPECT_EQ(getsid(*pid), *pid);
  EXPECT_EQ(getpgid(*pid), *pid);
  EXPECT_NE(getsid(*pid), getsid(0));
  rt_->Stop(spec.id, 0);
  EXPECT_TRUE(WaitExit(spec.id, 3000));
}

TEST_F(ProcessRuntimeTest, LeftoversOfTheGroupKilledWhenMainProcessExits) {
  ProcessSpec spec = Sh("leftover", "sleep 100 & echo $!");
  ASSERT_TRUE(rt_->Start(spec).ok());
  auto exit = WaitExit(spec.id);
  ASSERT_TRUE(exit);
  EXPECT_EQ(exit->exit_code, 0);
  ASSERT_EQ(Lines(spec.id, false).size(), 1u);
  const int leftover = std::stoi(Lines(spec.id, false)[0]);
  EXPECT_TRUE(WaitDead(leftover));
  // Re-parented to this process (the runtime is a child subreaper): Reap() reaps it.
  EXPECT_TRUE(ReapedSoon(leftover));
}

TEST_F(ProcessRuntimeTest, SigtermIgnoredMeansSigkillWhenGraceEnds) {
  FakeClock clock;
  rt_ = NewLocalProcessRuntime(&clock, {});
  ProcessSpec spec = Sh("stubborn", "trap '' TERM; echo ready; exec sleep 100");
  ASSERT_TRUE(rt_->Start(spec).ok());
  ASSERT_TRUE(WaitLine(spec.id, "ready"));

  rt_->Stop(spec.id, 10'000);
  EXPECT_FALSE(WaitExit(spec.id, 150)) << "SIGTERM is ignored; SIGKILL is not due yet";
  clock.Advance(9'999);
  EXPECT_FALSE(WaitExit(spec.id, 50));
  clock.Advance(1);
  auto exit = WaitExit(spec.id, 2000);
  ASSERT_TRUE(exit);
  EXPECT_EQ(exit->term_signal, SIGKILL);
  EXPECT_EQ(exit->at_ms, clock.NowMs());
}

TEST_F(ProcessRuntimeTest, SigkillAfterGraceOnTheRealClock) {
  ProcessSpec spec = Sh("stubborn2", "trap '' TERM; echo ready; exec sleep 100");
  ASSERT_TRUE(rt_->Start(spec).ok());
  ASSERT_TRUE(WaitLine(spec.id, "ready"));
  auto t0 = steady_clock::now();
  rt_->Stop(spec.id, 200);
  auto exit = WaitExit(spec.id, 3000);
  ASSERT_TRUE(exit);
  EXPECT_EQ(exit->term_signal, SIGKILL);
  EXPECT_GE(MsSince(t0), 200);
  EXPECT_LT(MsSince(t0), 1500);
}

TEST_F(ProcessRuntimeTest, AgentDescriptorsAndIgnoredSignalsNotInherited) {
  int leaky = open("/dev/null", O_RDONLY);  // no O_CLOEXEC
  ASSERT_GE(leaky, 0);
  signal(SIGTERM, SIG_IGN);
  ProcessSpec spec = Sh("inherit", "ls /proc/$$/fd; echo ready; exec sleep 100");
  ASSERT_TRUE(rt_->Start(spec).ok());
  ASSERT_TRUE(WaitLine(spec.id, "ready"));
  EXPECT_EQ(Lines(spec.id, false), (std::vector<std::string>{"0", "1", "2", "ready"}));
  rt_->Stop(spec.id, 10'000);
  auto exit = WaitExit(spec.id, 3000);
  signal(SIGTERM, SIG_DFL);
  close(leaky);
  ASSERT_TRUE(exit);
  EXPECT_EQ(exit->term_signal, SIGTERM);
}

TEST_F(ProcessRuntimeTest, MissingOrUnrunnableProgramFailsAndLeavesNothing) {
  ProcessSpec spec = Sh("missing", "");
  spec.argv = {"/nonexistent/program"};
  Result<int> pid = rt_->Start(spec);
  EXPECT_EQ(pid.status().code(), Code::kNotFound) << pid.status().ToString();

  spec.argv = {"gantry-no-such-program"};
  pid = rt_->Start(spec);
  EXPECT_EQ(pid.status().code(), Code::kNotFound) << pid.status().ToString();

  char file[] = "/tmp/gantry-noexec-XXXXXX";
  int fd = mkstemp(file);
  ASSERT_GE(fd, 0);
  close(fd);
  spec.argv = {file};
  pid = rt_->Start(spec);
  EXPECT_EQ(pid.status().code(), Code::kPermissionDenied) << pid.status().ToString();
  unlink(file);

  EXPECT_TRUE(rt_->Running().empty());
  EXPECT_TRUE(rt_->Reap().empty());
  EXPECT_TRUE(rt_->DrainLogs().empty());
  EXPECT_EQ(waitpid(-1, nullptr, WNOHANG), -1);
  for (const char* hierarchy : {"/sys/fs/cgroup/memory", "/sys/fs/cgroup/cpu", "/sys/fs/cgroup"}) {
    EXPECT_NE(access((std::string(hierarchy) + "/gantry/" + spec.id).c_str(), F_OK), 0);
  }

  spec.argv = {"true"};  // the id is free again
  EXPECT_TRUE(rt_->Start(spec).ok());
}

TEST_F(ProcessRuntimeTest, BadSpecsRejected) {
  ProcessSpec spec = Sh("bad", "true");
  spec.argv.clear();
  EXPECT_EQ(rt_->Start(spec).status().code(), Code::kInvalidArgument);
  spec = Sh("bad", "true");
  spec.id = "../escape";
  EXPECT_EQ(rt_->Start(spec).status().code(), Code::kInvalidArgument);
  spec = Sh("bad", "true");
  spec.env["A=B"] = "c";
  EXPECT_EQ(rt_->Start(spec).status().code(), Code::kInvalidArgument);
}

TEST_F(ProcessRuntimeTest, SameIdRejectedUntilReaped) {
  ProcessSpec spec = Sh("dup", "exec sleep 100");
  ASSERT_TRUE(rt_->Start(spec).ok());
  EXPECT_EQ(rt_->Start(spec).status().code(), Code::kAlreadyExists);
  rt_->Stop(spec.id, 0);
  auto exit = WaitExit(spec.id);
  ASSERT_TRUE(exit);
  EXPECT_EQ(exit->term_signal, SIGKILL);
  EXPECT_TRUE(rt_->Start(spec).ok());
}

TEST_F(ProcessRuntimeTest, StopAllEndsEveryChild) {
  ProcessSpec polite = Sh("polite", "exec sleep 100");
  ProcessSpec stubborn = Sh("stubborn3", "trap '' TERM; echo ready; exec sleep 100");
  ProcessSpec done = Sh("done", "exit 3");
  ASSERT_TRUE(rt_->Start(polite).ok());
  ASSERT_TRUE(rt_->Start(stubborn).ok());
  Result<int> done_pid = rt_->Start(done);
  ASSERT_TRUE(done_pid.ok());
  ASSERT_TRUE(WaitLine(stubborn.id, "ready"));
  ASSERT_TRUE(WaitDead(*done_pid));  // exited, not yet reaped

  auto t0 = steady_clock::now();
  rt_->StopAll(200);
  EXPECT_LT(MsSince(t0), 1500);
  EXPECT_TRUE(rt_->Running().empty());
  std::map<std::string, ProcessExit> by_id;
  for (const ProcessExit& e : rt_->Reap()) by_id[e.id] = e;
  ASSERT_EQ(by_id.size(), 3u);
  EXPECT_EQ(by_id[polite.id].term_signal, SIGTERM);
  EXPECT_EQ(by_id[stubborn.id].term_signal, SIGKILL);
  EXPECT_EQ(by_id[done.id].exit_code, 3);
}

TEST_F(ProcessRuntimeTest, DestroyingTheRuntimeKillsAndReapsChildren) {
  Result<int> pid = rt_->Start(Sh("orphan", "exec sleep 100"));
  ASSERT_TRUE(pid.ok());
  rt_.reset();
  EXPECT_NE(access(("/proc/" + std::to_string(*pid)).c_str(), F_OK), 0);
}

// A launcher as a template makes its workers: a double fork, so that the worker is an orphan
// re-parented to this process (the runtime made it a child subreaper), in its own process
// group and in the runtime's cgroups, with its output on the runtime's pipes.
Result<int> DoubleForkLauncher(const ProcessSpec& spec, const LaunchContext& ctx) {
  int report[2];
  if (pipe(report) != 0) return Internal("pipe");
  const pid_t middle = fork();
  if (middle == 0) {
    if (fork() == 0) {
      setpgid(0, 0);
      for (const std::string& procs : ctx.cgroup_procs) {
        std::ofstream(procs) << "0";
      }
      while (getppid() != ctx.agent_pid) usleep(100);
      dup2(ctx.stdout_fd, STDOUT_FILENO);
      dup2(ctx.stderr_fd, STDERR_FILENO);
      const pid_t self = getpid();
      if (write(report[1], &self, sizeof self) != sizeof self) _exit(1);
      execl("/bin/sh", "sh", "-c", spec.argv.back().c_str(), nullptr);
      _exit(127);
    }
    _exit(0);
  }
  close(report[1]);
  waitpid(middle, nullptr, 0);
  pid_t pid = 0;
  const bool ok = read(report[0], &pid, sizeof pid) == sizeof pid;
  close(report[0]);
  if (!ok) return Internal("the launched child died");
  return pid;
}

TEST_F(ProcessRuntimeTest, LaunchedChildIsOwnedLikeAStartedOne) {
  // stderr first: once "launched" is seen, "oops" is in its pipe (a slow host may otherwise be
  // killed between the two echos).
  ProcessSpec spec = Sh("launched", "echo oops >&2; echo launched; exec sleep 100");
  auto pid = rt_->Launch(spec, DoubleForkLauncher);
  ASSERT_TRUE(pid.ok()) << pid.status().ToString();
  ASSERT_TRUE(WaitLine(spec.id, "launched"));
  EXPECT_EQ(getpgid(*pid), *pid);
  EXPECT_EQ(rt_->Running(), std::vector<std::string>{spec.id});
  EXPECT_EQ(rt_->Launch(spec, DoubleForkLauncher).status().code(), Code::kAlreadyExists);
  rt_->Stop(spec.id, 0);
  auto exit = WaitExit(spec.id);
  ASSERT_TRUE(exit);
  EXPECT_EQ(exit->pid, *pid);
  EXPECT_EQ(exit->term_signal, SIGKILL);
  EXPECT_EQ(Lines(spec.id, true), std::vector<std::string>{"oops"});
}

TEST_F(ProcessRuntimeTest, FailedLaunchLeavesNothing) {
  ProcessSpec spec = Sh("nolaunch", "true");
  auto pid = rt_->Launch(spec, [](const ProcessSpec&, const LaunchContext&) -> Result<int> {
    return Unavailable("no template");
  });
  EXPECT_EQ(pid.status().code(), Code::kUnavailable);
  EXPECT_TRUE(rt_->Running().empty());
  EXPECT_EQ(access(("/sys/fs/cgroup/memory/gantry/" + spec.id).c_str(), F_OK), -1);
  // The id is free again.
  EXPECT_TRUE(rt_->Launch(spec, DoubleForkLauncher).ok());
  ASSERT_TRUE(WaitExit(spec.id));
}

// A launcher as a template inside a container makes its workers: the worker is a child of
// another process (here `parent`, a child of the test), never of the runtime; that parent reaps
// it and reports its wait status on a pipe, as a container's template does over its socket.
struct ExternalParent {
  pid_t parent = 0;
  int status_fd = -1;  // the worker's wait status, once `parent` has reaped it
  std::shared_ptr<ExternalExit> exit = std::make_shared<ExternalExit>();

  Result<int> Launch(const ProcessSpec& spec, const LaunchContext& ctx) {
    int report[2], status[2];
    if (pipe(report) != 0 || pipe(status) != 0) return Internal("pipe");
    parent = fork();
    if (parent == 0) {
      const pid_t worker = fork();
      if (worker == 0) {
        setsid();
        dup2(ctx.stdout_fd, STDOUT_FILENO);
        dup2(ctx.stderr_fd, STDERR_FILENO);
        execl("/bin/sh", "sh", "-c", spec.argv.back().c_str(), nullptr);
        _exit(127);
      }
      if (write(report[1], &worker, sizeof worker) != sizeof worker) _exit(1);
      int st = 0;
      waitpid(worker, &st, 0);
      if (write(status[1], &st, sizeof st) != sizeof st) _exit(1);
      _exit(0);
    }
    close(report[1]);
    close(status[1]);
    status_fd = status[0];
    pid_t pid = 0;
    const bool ok = read(report[0], &pid, sizeof pid) == sizeof pid;
    close(report[0]);
    if (!ok) return Internal("the launched child died");
    *ctx.external = exit;
    return pid;
  }
  // Launch() as the runtime takes it.
  Launcher AsLauncher() {
    return [this](const ProcessSpec& s, const LaunchContext& ctx) { return Launch(s, ctx); };
  }
  // Reads the status the parent reported (blocks until it does) and reaps the parent.
  void Report() {
    int st = 0;
    if (read(status_fd, &st, sizeof st) == sizeof st) exit->wait_status = st;
  }
  ~ExternalParent() {
    if (status_fd >= 0) close(status_fd);
    if (parent > 0) waitpid(parent, nullptr, 0);
  }
};

TEST_F(ProcessRuntimeTest, ExternalChildEndsWithTheStatusItsParentReports) {
  ExternalParent parent;
  ProcessSpec spec = Sh("external", "echo inside; sleep 0.2; exit 7");
  auto pid = rt_->Launch(spec, parent.AsLauncher());
  ASSERT_TRUE(pid.ok()) << pid.status().ToString();
  EXPECT_NE(ReadProcStat(*pid)->ppid, getpid());  // not ours
  ASSERT_TRUE(WaitLine(spec.id, "inside"));
  // It ends, but its status is not known yet: the runtime waits for it.
  ASSERT_TRUE(WaitDead(*pid));
  for (int i = 0; i < 20; ++i) {
    EXPECT_TRUE(rt_->Reap().empty());
    std::this_thread::sleep_for(milliseconds(5));
  }
  EXPECT_EQ(rt_->Running(), std::vector<std::string>{spec.id});
  parent.Report();
  auto exit = WaitExit(spec.id);
  ASSERT_TRUE(exit);
  EXPECT_EQ(exit->pid, *pid);
  EXPECT_EQ(exit->exit_code, 7);
  EXPECT_TRUE(rt_->Running().empty());
}

TEST_F(ProcessRuntimeTest, ExternalChildIsStoppedAndKilledLikeAnyOther) {
  ExternalParent parent;
  // exec: no child of its own to be orphaned when it is killed (and outlive the test).
  ProcessSpec spec = Sh("extstop", "trap '' TERM; echo up; exec sleep 100");
  auto pid = rt_->Launch(spec, parent.AsLauncher());
  ASSERT_TRUE(pid.ok()) << pid.status().ToString();
  ASSERT_TRUE(WaitLine(spec.id, "up"));
  rt_->Stop(spec.id, 100);  // SIGTERM is ignored: SIGKILL after 100 ms
  std::thread report([&] { parent.Report(); });
  auto exit = WaitExit(spec.id);
  report.join();
  ASSERT_TRUE(exit);
  EXPECT_EQ(exit->term_signal, SIGKILL);
}

TEST_F(ProcessRuntimeTest, ExternalChildThatEndedBeforeItsLaunchReturnedIsOwnedAllTheSame) {
  // It exits (and its parent reaps it) before the runtime can watch it: its end is known at
  // once, its status comes as for any other.
  ExternalParent parent;
  ProcessSpec spec = Sh("extgone", "exit 5");
  auto pid = rt_->Launch(spec, [&](const ProcessSpec& s, const LaunchContext& ctx) {
    auto p = parent.Launch(s, ctx);
    parent.Report();  // waits until the parent has reaped it
    return p;
  });
  ASSERT_TRUE(pid.ok()) << pid.status().ToString();
  auto exit = WaitExit(spec.id);
  ASSERT_TRUE(exit);
  EXPECT_EQ(exit->exit_code, 5);
}

TEST_F(ProcessRuntimeTest, ExternalChildWhoseStatusNeverComesEndsUnknown) {
  ExternalParent parent;
  ProcessSpec spec = Sh("extlost", "exit 3");
  auto pid = rt_->Launch(spec, parent.AsLauncher());
  ASSERT_TRUE(pid.ok()) << pid.status().ToString();
  const auto t0 = steady_clock::now();
  auto exit = WaitExit(spec.id, 10'000);
  ASSERT_TRUE(exit);
  EXPECT_GE(MsSince(t0), kExternalStatusWaitMs - 50);
  EXPECT_EQ(exit->exit_code, -1);
  EXPECT_EQ(exit->term_signal, 0);
}

TEST_F(ProcessRuntimeTest, OrphansOfWorkersAreReaped) {
  // The worker leaves a process in another session behind: it is re-parented to this
  // process, and reaped by the runtime when it ends.
  ProcessSpec spec = Sh("orphans", "setsid sh -c 'echo $$; exec sleep 0.3' & wait; exit 0");
  ASSERT_TRUE(rt_->Start(spec).ok());
  ASSERT_TRUE(WaitExit(spec.id));
  auto lines = Lines(spec.id, false);
  ASSERT_EQ(lines.size(), 1u);
  const int orphan = std::stoi(lines[0]);
  ASSERT_TRUE(WaitDead(orphan));
  EXPECT_TRUE(ReapedSoon(orphan));
}

class CgroupTest : public ProcessRuntimeTest {
 protected:
  void SetUp() override {
    ProcessRuntimeTest::SetUp();
    if (rt_->limits_note().empty()) return;
    // tests/vm/cgroup2_tests.sh sets it: there, a host without limits is a failure.
    if (getenv("GANTRY_REQUIRE_CGROUP_LIMITS")) FAIL() << "no limits: " << rt_->limits_note();
    GTEST_SKIP() << "no limits here: " << rt_->limits_note();
  }
};

TEST_F(CgroupTest, ChildRunsInItsCgroupWithItsLimits) {
  ProcessSpec spec = Sh("limits", "cat /proc/self/cgroup; echo ready; exec sleep 100");
  spec.cpu = 0.5;
  spec.memory_mb = 64;
  ASSERT_TRUE(rt_->Start(spec).ok());
  ASSERT_TRUE(WaitLine(spec.id, "ready"));
  const std::string suffix = "/gantry/" + spec.id;
  int in_cgroup = 0;
  for (const std::string& line : Lines(spec.id, false)) {
    if (line.size() > suffix.size() && line.ends_with(suffix)) ++in_cgroup;
  }
  EXPECT_GE(in_cgroup, 1);

  std::vector<std::string> dirs;
  if (access("/sys/fs/cgroup/cgroup.controllers", F_OK) == 0) {
    dirs = {"/sys/fs/cgroup" + suffix};
    EXPECT_EQ(ReadAll(dirs[0] + "/memory.max"), std::to_string(64 << 20) + "\n");
    EXPECT_EQ(ReadAll(dirs[0] + "/cpu.weight"), "50\n");
  } else {
    dirs = {"/sys/fs/cgroup/memory" + suffix, "/sys/fs/cgroup/cpu" + suffix};
    EXPECT_EQ(ReadAll(dirs[0] + "/memory.limit_in_bytes"), std::to_string(64 << 20) + "\n");
    EXPECT_EQ(ReadAll(dirs[1] + "/cpu.shares"), "512\n");
  }
  rt_->Stop(spec.id, 0);
  ASSERT_TRUE(WaitExit(spec.id));
  for (const std::string& dir : dirs) EXPECT_NE(access(dir.c_str(), F_OK), 0) << dir;
}

TEST_F(CgroupTest, LaunchedChildJoinsItsCgroupBeforeItRuns) {
  ProcessSpec spec = Sh("launchcg", "cat /proc/self/cgroup; echo ready; exec sleep 100");
  spec.memory_mb = 64;
  ASSERT_TRUE(rt_->Launch(spec, DoubleForkLauncher).ok());
  ASSERT_TRUE(WaitLine(spec.id, "ready"));
  int in_cgroup = 0;
  for (const std::string& line : Lines(spec.id, false)) {
    if (line.ends_with("/gantry/" + spec.id)) ++in_cgroup;
  }
  EXPECT_GE(in_cgroup, 1);
  rt_->Stop(spec.id, 0);
  ASSERT_TRUE(WaitExit(spec.id));
}

TEST_F(CgroupTest, LaunchedChildAlreadyInACgroupMadeAheadKeepsIt) {
  // As a template's spare: it joins a cgroup made ahead, long before it gets its identity.
  const std::string ahead = Id("ahead");
  auto procs = rt_->CreateCgroup(ahead, {.cpu = 0.25, .memory_mb = 128});
  ASSERT_TRUE(procs.ok()) << procs.status().ToString();
  ASSERT_FALSE(procs->empty());
  ProcessSpec spec = Sh("adopted", "cat /proc/self/cgroup; echo ready; exec sleep 100");
  spec.memory_mb = 64;
  auto launcher = [&](const ProcessSpec& s, const LaunchContext& ctx) -> Result<int> {
    LaunchContext joined = ctx;
    joined.cgroup_procs = *procs;  // the cgroup made ahead, not the spec's
    auto pid = DoubleForkLauncher(s, joined);
    if (pid.ok()) *ctx.in_cgroup = ahead;
    return pid;
  };
  ASSERT_TRUE(rt_->Launch(spec, launcher).ok());
  ASSERT_TRUE(WaitLine(spec.id, "ready"));
  // On cgroup v1 it is renamed to the worker's id; on v2 it keeps its name. Either way the
  // spec's limits are in force.
  const bool v1 = access("/sys/fs/cgroup/cgroup.controllers", F_OK) != 0;
  const std::string name = v1 ? spec.id : ahead;
  int in_cgroup = 0;
  for (const std::string& line : Lines(spec.id, false)) {
    // It ran in the cgroup made ahead (under either name: the rename may come first).
    if (line.ends_with("/gantry/" + ahead) || line.ends_with("/gantry/" + spec.id)) ++in_cgroup;
  }
  EXPECT_GE(in_cgroup, 1);
  const std::string dir =
      v1 ? "/sys/fs/cgroup/memory/gantry/" + name : "/sys/fs/cgroup/gantry/" + name;
  EXPECT_EQ(ReadAll(dir + (v1 ? "/memory.limit_in_bytes" : "/memory.max")),
            std::to_string(64 << 20) + "\n");
  rt_->Stop(spec.id, 0);
  ASSERT_TRUE(WaitExit(spec.id));
  EXPECT_NE(access(dir.c_str(), F_OK), 0);  // removed with the child
  // A cgroup made ahead and never used is removed on request.
  const std::string unused = Id("unused");
  ASSERT_TRUE(rt_->CreateCgroup(unused, {}).ok());
  rt_->RemoveCgroup(unused);
  EXPECT_NE(access(("/sys/fs/cgroup/memory/gantry/" + unused).c_str(), F_OK), 0);
}

TEST_F(CgroupTest, EmptyCgroupsLeftBehindAreRemovedAtStart) {
  const std::string old = Id("left-behind"), young = Id("young");
  ASSERT_TRUE(rt_->CreateCgroup(old, {}).ok());
  ASSERT_TRUE(rt_->CreateCgroup(young, {}).ok());
  const bool v1 = access("/sys/fs/cgroup/cgroup.controllers", F_OK) != 0;
  const std::string base = v1 ? "/sys/fs/cgroup/memory/gantry/" : "/sys/fs/cgroup/gantry/";
  const timeval two_hours_ago[2] = {{time(nullptr) - 7200, 0}, {time(nullptr) - 7200, 0}};
  ASSERT_EQ(utimes((base + old).c_str(), two_hours_ago), 0);
  auto next = NewLocalProcessRuntime(&clock_, {});  // as an agent starting again
  EXPECT_NE(access((base + old).c_str(), F_OK), 0);
  EXPECT_EQ(access((base + young).c_str(), F_OK), 0);  // maybe another runtime's, in use
  rt_->RemoveCgroup(old);
  rt_->RemoveCgroup(young);
}

TEST_F(CgroupTest, ChildOverItsMemoryLimitIsOomKilled) {
  ProcessSpec spec;
  spec.id = Id("hog");
  spec.argv = {"/usr/bin/python3", "-c", "b = bytearray(200 << 20)"};
  spec.memory_mb = 64;
  ASSERT_TRUE(rt_->Start(spec).ok());
  auto exit = WaitExit(spec.id, 10'000);
  ASSERT_TRUE(exit);
  EXPECT_TRUE(exit->oom_killed);
  EXPECT_EQ(exit->term_signal, SIGKILL);

  spec.id = Id("modest");
  spec.argv = {"/usr/bin/python3", "-c", "b = bytearray(8 << 20)"};
  ASSERT_TRUE(rt_->Start(spec).ok());
  exit = WaitExit(spec.id, 10'000);
  ASSERT_TRUE(exit);
  EXPECT_FALSE(exit->oom_killed);
  EXPECT_EQ(exit->exit_code, 0);
}

TEST(ProcessRuntimeOptionsTest, CgroupsCanBeTurnedOff) {
  SystemClock clock;
  ProcessRuntimeOptions options;
  options.use_cgroups = false;
  auto rt = NewLocalProcessRuntime(&clock, options);
  EXPECT_NE(rt->limits_note().find("disabled"), std::string::npos);
}

TEST(FakeProcessRuntimeTest, RecordsCallsAndPlaysExitsAndLines) {
  FakeClock clock;
  FakeProcessRuntime rt(&clock);
  ProcessSpec spec;
  spec.id = "w1";
  spec.argv = {"worker"};
  Result<int> pid = rt.Start(spec);
  ASSERT_TRUE(pid.ok());
  EXPECT_EQ(rt.Start(spec).status().code(), Code::kAlreadyExists);
  spec.id = "w2";
  ASSERT_TRUE(rt.Start(spec).ok());
  EXPECT_EQ(rt.Running(), (std::vector<std::string>{"w1", "w2"}));
  EXPECT_EQ(rt.starts().size(), 3u);

  rt.Emit("w1", "hello", /*stderr_stream=*/true);
  auto lines = rt.DrainLogs();
  ASSERT_EQ(lines.size(), 1u);
  EXPECT_EQ(lines[0].text, "hello");
  EXPECT_TRUE(lines[0].stderr_stream);

  rt.Exit("w1", 2);
  rt.Stop("w2", 5000);
  auto exits = rt.Reap();
  ASSERT_EQ(exits.size(), 2u);
  EXPECT_EQ(exits[0].id, "w1");
  EXPECT_EQ(exits[0].pid, *pid);
  EXPECT_EQ(exits[0].exit_code, 2);
  EXPECT_EQ(exits[1].term_signal, SIGTERM);
  ASSERT_EQ(rt.stops().size(), 1u);
  EXPECT_EQ(rt.stops()[0].grace_ms, 5000);
  EXPECT_TRUE(rt.Running().empty());

  rt.FailNextStart(Unavailable("no"));
  EXPECT_EQ(rt.Start(spec).status().code(), Code::kUnavailable);
  EXPECT_TRUE(rt.Start(spec).ok());
}

}  // namespace
}  // namespace gantry::agent
