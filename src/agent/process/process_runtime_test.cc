// LocalProcessRuntime on real processes: Start()ed children (their environment, output, exits,
// stops and failures), orphans, and the options; and FakeProcessRuntime. Launch()ed children
// and cgroups are in process_launch_test.cc.
#include "agent/process/process_runtime.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sched.h>
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
#include "agent/process/process_runtime_test_util.h"
#include "common/fd.h"
#include "common/procfs.h"

namespace gantry::agent {
namespace {

using process_test::MsSince;
using process_test::ProcessRuntimeTest;
using process_test::WaitDead;
using std::chrono::steady_clock;

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

TEST_F(ProcessRuntimeTest, RunsAsItsUserWithOneGroupAndNoNewPrivileges) {
  if (geteuid() != 0) GTEST_SKIP() << "changing user needs root";
  char dir[] = "/tmp/gantry-userdir-XXXXXX";  // 0700 root: closed to the worker's user
  ASSERT_NE(mkdtemp(dir), nullptr);
  ProcessSpec spec =
      Sh("user", "id -u; id -g; id -G; grep NoNewPrivs /proc/self/status | tr -d '\\t'; umask");
  spec.uid = 200'123;
  spec.gid = 200'124;
  ASSERT_TRUE(rt_->Start(spec).ok());
  ASSERT_TRUE(WaitExit(spec.id));
  EXPECT_EQ(Lines(spec.id, false),
            (std::vector<std::string>{"200123", "200124", "200124", "NoNewPrivs:1", "0022"}));
  // A workdir the user may not enter fails the start, as that user.
  spec.workdir = dir;
  Result<int> pid = rt_->Start(spec);
  EXPECT_EQ(pid.status().code(), Code::kPermissionDenied) << pid.status().ToString();
  EXPECT_TRUE(rt_->Running().empty());
  rmdir(dir);
  // A user without a group (or the other way round) is refused.
  spec.workdir.clear();
  spec.gid = -1;
  EXPECT_EQ(rt_->Start(spec).status().code(), Code::kInvalidArgument);
}

TEST_F(ProcessRuntimeTest, JoinsItsNetworkNamespaceBeforeItChangesUser) {
  if (geteuid() != 0) GTEST_SKIP() << "a network namespace needs root";
  Fd ns;
  std::thread([&] {
    if (unshare(CLONE_NEWNET) == 0) ns.Reset(open("/proc/thread-self/ns/net", O_RDONLY));
  }).join();
  ASSERT_GE(ns.get(), 0);
  struct stat want {};
  ASSERT_EQ(fstat(ns.get(), &want), 0);
  ProcessSpec spec = Sh("netns", "stat -L -c %i /proc/self/ns/net; id -u");
  spec.netns_fd = ns.get();
  spec.uid = spec.gid = 200'125;  // joins while it still may
  ASSERT_TRUE(rt_->Start(spec).ok());
  ASSERT_TRUE(WaitExit(spec.id));
  EXPECT_EQ(Lines(spec.id, false),
            (std::vector<std::string>{std::to_string(want.st_ino), "200125"}));
  spec.netns_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);  // not a namespace: the start fails
  Result<int> pid = rt_->Start(spec);
  close(spec.netns_fd);
  EXPECT_FALSE(pid.ok());
  EXPECT_NE(pid.status().message().find("network namespace"), std::string::npos);
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
