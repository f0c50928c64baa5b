// Processes started with a mount view (mount_view.h) by the real runtime: what they see and may
// write, as root and as an unprivileged user (the case the view exists for).
#include "agent/process/mount_view.h"

#include <grp.h>
#include <gtest/gtest.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <set>

#include "agent/process/process_runtime_test_util.h"

namespace gantry::agent {
namespace {

namespace fs = std::filesystem;
using process_test::ProcessRuntimeTest;
using process_test::ReadAll;

// What a worker in a view tries, one answer per line.
constexpr char kProbe[] = R"sh(
echo "pid $$"
echo "uid $(id -u)"
cat "$D/secret" >/dev/null 2>&1 && echo "secret read" || echo "secret hidden"
ls "$D" | tr '\n' ' '; echo
cat "$D/bundle/handler"
(echo x > "$D/bundle/new") 2>/dev/null && echo "bundle written" || echo "bundle read-only"
echo x > "$D/scratch/out" && echo "scratch written"
(echo x > /usr/gantry-view-test) 2>/dev/null && echo "usr written" || echo "usr read-only"
(echo x > /gantry-view-test) 2>/dev/null && echo "root written" || echo "root read-only"
echo x > /tmp/gantry-view-test && echo "tmp written"
test -e /proc/$P/environ && echo "agent visible" || echo "agent hidden"
echo x > /dev/null && echo "dev/null written"
)sh";

const std::vector<std::string> kExpected = {
    "secret hidden", "bundle scratch ", "handler",     "bundle read-only", "scratch written",
    "usr read-only", "root read-only",  "tmp written", "agent hidden",     "dev/null written"};

class MountViewTest : public ProcessRuntimeTest {
 protected:
  void SetUp() override {
    ProcessRuntimeTest::SetUp();
    char tmpl[] = "/tmp/gantry-view-XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    chmod(dir_.c_str(), 0755);  // an unprivileged user's agent may reach it
    for (const char* d : {"root", "bundle", "scratch"}) fs::create_directory(dir_ + "/" + d);
    chmod((dir_ + "/scratch").c_str(), 0777);
    chmod((dir_ + "/root").c_str(), 0777);
    std::ofstream(dir_ + "/secret") << "admin key\n";  // readable by all: only the view hides it
    std::ofstream(dir_ + "/bundle/handler") << "handler\n";
  }
  void TearDown() override {
    ProcessRuntimeTest::TearDown();
    fs::remove_all(dir_);
  }

  ProcessSpec Probe(const std::string& name) const {
    ProcessSpec spec = Sh(name, kProbe);
    spec.env["D"] = dir_;
    spec.env["P"] = std::to_string(getpid());
    spec.workdir = dir_ + "/bundle";
    MountView v;
    v.root = dir_ + "/root";
    v.binds = {{dir_ + "/bundle", false}, {dir_ + "/scratch", true}};
    spec.view = v;
    return spec;
  }

  std::string dir_;
};

TEST_F(MountViewTest, AWorkerSeesOnlyItsViewAndItsOwnProcesses) {
  ProcessSpec spec = Probe("view");
  ASSERT_TRUE(rt_->Start(spec).ok());
  auto exit = WaitExit(spec.id);
  ASSERT_TRUE(exit);
  EXPECT_EQ(exit->exit_code, 0) << testing::PrintToString(Lines(spec.id, true));
  std::vector<std::string> lines = Lines(spec.id, false);
  ASSERT_EQ(lines.size(), kExpected.size() + 2) << testing::PrintToString(lines);
  EXPECT_EQ(lines[0], "pid 1");  // the init of a PID namespace of its own
  EXPECT_EQ(lines[1], "uid " + std::to_string(geteuid()));
  EXPECT_EQ(std::vector<std::string>(lines.begin() + 2, lines.end()), kExpected);
  // Its writable bind is the host's directory; its /tmp is its own.
  EXPECT_EQ(ReadAll(dir_ + "/scratch/out"), "x\n");
  EXPECT_FALSE(fs::exists("/tmp/gantry-view-test"));
  EXPECT_FALSE(fs::exists(dir_ + "/bundle/new"));
  // Nothing of its mounts shows on the host.
  EXPECT_TRUE(fs::is_empty(dir_ + "/root"));
}

TEST_F(MountViewTest, AnUnprivilegedAgentGivesTheSameView) {
  if (geteuid() != 0) GTEST_SKIP() << "becoming another user needs root";
  int out[2];
  ASSERT_EQ(pipe(out), 0);
  const pid_t child = fork();
  ASSERT_GE(child, 0);
  if (child == 0) {  // the agent as nobody: a runtime of its own, without cgroups
    close(out[0]);
    if (setgroups(0, nullptr) != 0 || setresgid(65534, 65534, 65534) != 0 ||
        setresuid(65534, 65534, 65534) != 0 || prctl(PR_SET_DUMPABLE, 1) != 0) {
      _exit(2);  // (a change of user made it undumpable: its /proc files root's, unlike an
    }            // agent started as that user)
    SystemClock clock;
    auto rt = NewLocalProcessRuntime(&clock, {.use_cgroups = false});
    ProcessSpec spec = Probe("nobody");
    spec.env["P"] = std::to_string(getppid());  // the test, also nobody's to read otherwise
    auto pid = rt->Start(spec);
    if (!pid.ok()) {
      std::string why = pid.status().ToString() + "\n";
      (void)!write(out[1], why.data(), why.size());
      _exit(3);
    }
    std::string text;
    for (int i = 0; i < 500; ++i) {
      for (const LogLine& l : rt->DrainLogs()) text += l.text + "\n";
      bool done = false;
      for (const ProcessExit& e : rt->Reap()) done = e.id == spec.id;
      if (done) break;
      usleep(10'000);
    }
    for (const LogLine& l : rt->DrainLogs()) text += l.text + "\n";
    (void)!write(out[1], text.data(), text.size());
    _exit(0);
  }
  close(out[1]);
  std::string text;
  char buf[4096];
  for (ssize_t n; (n = read(out[0], buf, sizeof buf)) > 0;) text.append(buf, n);
  close(out[0]);
  int status = 0;
  ASSERT_EQ(waitpid(child, &status, 0), child);
  ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status << ": " << text;
  std::string expected = "pid 1\nuid 65534\n";
  for (const std::string& l : kExpected) expected += l + "\n";
  EXPECT_EQ(text, expected);
}

// Without cgroups (an agent that is not root) pids_max caps a view's tasks through
// RLIMIT_NPROC, counted in its own user namespace: its own processes only, not the agent's
// user's others (the test runs as nobody, whose other processes do not count).
TEST_F(MountViewTest, PidsMaxCapsTheTasksOfAViewWithoutCgroups) {
  if (geteuid() != 0) GTEST_SKIP() << "becoming another user needs root";
  const pid_t child = fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    if (setgroups(0, nullptr) != 0 || setresgid(65534, 65534, 65534) != 0 ||
        setresuid(65534, 65534, 65534) != 0 || prctl(PR_SET_DUMPABLE, 1) != 0) {
      _exit(2);
    }
    SystemClock clock;
    auto rt = NewLocalProcessRuntime(&clock, {.use_cgroups = false});
    ProcessSpec spec = Probe("nproc");
    // Forks sleepers until one fails: the shell and 9 of them make 10.
    spec.argv = {"/bin/sh", "-c",
                 "n=0; while [ $n -lt 40 ] && (sleep 5 &) 2>/dev/null; do n=$((n+1)); done; "
                 "echo $n"};
    spec.pids_max = 10;
    if (!rt->Start(spec).ok()) _exit(3);
    std::string out;
    for (int i = 0; i < 1000 && out.empty(); ++i) {
      for (const LogLine& l : rt->DrainLogs()) out = l.text;
      usleep(10'000);
    }
    rt->StopAll(0);
    _exit(out.empty() ? 4 : std::min(std::atoi(out.c_str()), 100));
  }
  int status = 0;
  ASSERT_EQ(waitpid(child, &status, 0), child);
  ASSERT_TRUE(WIFEXITED(status)) << status;
  // Each (sleep &) in a subshell holds a task a moment; fewer than 40 got through, and some did.
  EXPECT_LE(WEXITSTATUS(status), 10);
  EXPECT_GT(WEXITSTATUS(status), 0);
}

TEST_F(MountViewTest, ABadViewFailsTheStartAndSaysWhy) {
  ProcessSpec spec = Probe("bad");
  spec.view->binds.push_back({dir_ + "/missing", false});
  auto pid = rt_->Start(spec);
  EXPECT_EQ(pid.status().code(), Code::kNotFound) << pid.status().ToString();
  EXPECT_NE(pid.status().message().find(dir_ + "/missing"), std::string::npos);

  spec = Probe("relative");
  spec.view->root = "root";
  EXPECT_EQ(rt_->Start(spec).status().code(), Code::kInvalidArgument);

  spec = Probe("user");
  spec.uid = spec.gid = 65534;
  EXPECT_EQ(rt_->Start(spec).status().code(), Code::kInvalidArgument);

  // The workdir is looked for inside the view: the host's data directory is not there.
  spec = Probe("workdir");
  spec.workdir = dir_ + "/data";
  fs::create_directory(spec.workdir);
  pid = rt_->Start(spec);
  EXPECT_EQ(pid.status().code(), Code::kNotFound) << pid.status().ToString();
  EXPECT_TRUE(rt_->Running().empty());
}

}  // namespace
}  // namespace gantry::agent
