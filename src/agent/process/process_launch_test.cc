// LocalProcessRuntime on real processes: Launch()ed children, as a template makes its workers
// (double-forked, or inside a container by a parent that reports their ends), and the cgroups of
// started and launched children.
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

#include "agent/process/process_runtime.h"
#include "agent/process/process_runtime_test_util.h"
#include "common/procfs.h"

namespace gantry::agent {
namespace {

using process_test::MsSince;
using process_test::ProcessRuntimeTest;
using process_test::ReadAll;
using process_test::WaitDead;
using std::chrono::milliseconds;
using std::chrono::steady_clock;

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
  // It lives a second: long enough to be looked at even at a VM's emulated speed.
  ProcessSpec spec = Sh("external", "echo inside; sleep 1; exit 7");
  auto pid = rt_->Launch(spec, parent.AsLauncher());
  ASSERT_TRUE(pid.ok()) << pid.status().ToString();
  std::optional<ProcStat> stat = ReadProcStat(*pid);
  ASSERT_TRUE(stat);
  EXPECT_NE(stat->ppid, getpid());  // not ours
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

}  // namespace
}  // namespace gantry::agent
