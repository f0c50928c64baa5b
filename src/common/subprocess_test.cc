#include "common/subprocess.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <string>
#include <thread>
#include <vector>

#include "common/fd.h"

namespace gantry {
namespace {

using std::chrono::milliseconds;
using SteadyClock = std::chrono::steady_clock;

SubprocessOptions ShellOptions() {
  SubprocessOptions o;
  o.env = {"PATH=/usr/local/bin:/usr/bin:/bin"};
  o.timeout_ms = 20'000;
  return o;
}

Result<SubprocessResult> Sh(const std::string& script, const SubprocessOptions& options) {
  return RunProcess({"/bin/sh", "-c", script}, options);
}

int64_t MsSince(SteadyClock::time_point t0) {
  return std::chrono::duration_cast<milliseconds>(SteadyClock::now() - t0).count();
}

TEST(SubprocessTest, ReturnsExitStatusAndOutput) {
  Result<SubprocessResult> r = Sh("echo out; echo err >&2; exit 3", ShellOptions());
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->exit_code(), 3);
  EXPECT_FALSE(r->succeeded());
  EXPECT_FALSE(r->timed_out);
  EXPECT_FALSE(r->cancelled);
  EXPECT_EQ(r->output, "out\nerr\n");
  EXPECT_EQ(DescribeWaitStatus(r->wait_status), "exit code 3");

  r = Sh("true", ShellOptions());
  ASSERT_TRUE(r.ok());
  EXPECT_TRUE(r->succeeded());
  EXPECT_EQ(r->exit_code(), 0);
}

TEST(SubprocessTest, EnvironmentIsExactlyTheOptions) {
  SubprocessOptions o;
  o.env = {"A=1", "B=two"};
  Result<SubprocessResult> r = RunProcess({"/usr/bin/env"}, o);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->output, "A=1\nB=two\n");
}

TEST(SubprocessTest, StdinIsDevNull) {
  Result<SubprocessResult> r = Sh("cat; echo done", ShellOptions());
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->output, "done\n");
}

TEST(SubprocessTest, KeepsTheEndOfLongOutput) {
  SubprocessOptions o = ShellOptions();
  o.max_output = 1000;
  Result<SubprocessResult> r = Sh("i=0; while [ $i -lt 5000 ]; do echo $i; i=$((i+1)); done", o);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->output.size(), 1000u);
  EXPECT_EQ(r->output.substr(r->output.size() - 10), "4998\n4999\n");
}

TEST(SubprocessTest, PassesLinesWithoutNewlineOrCarriageReturn) {
  SubprocessOptions o = ShellOptions();
  std::vector<std::string> lines;
  o.on_line = [&](std::string_view l) { lines.emplace_back(l); };
  Result<SubprocessResult> r = Sh(R"(printf 'a\r\nb\n\nlast')", o);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(lines, (std::vector<std::string>{"a", "b", "", "last"}));
  EXPECT_EQ(r->output, "a\r\nb\n\nlast");
}

TEST(SubprocessTest, PassesAnEndlessLineInPieces) {
  SubprocessOptions o = ShellOptions();
  o.max_output = 16;
  std::string joined;
  int pieces = 0;
  o.on_line = [&](std::string_view l) {
    joined += l;
    ++pieces;
  };
  const std::string a(40, 'a'), b(40, 'b');
  Result<SubprocessResult> r = Sh("printf " + a + "; sleep 0.2; printf " + b, o);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(joined, a + b);
  EXPECT_EQ(pieces, 2);
  EXPECT_EQ(r->output, std::string(16, 'b'));
}

TEST(SubprocessTest, KillsPastTheTimeout) {
  SubprocessOptions o = ShellOptions();
  o.timeout_ms = 200;
  const auto t0 = SteadyClock::now();
  Result<SubprocessResult> r = RunProcess({"/bin/sleep", "30"}, o);
  ASSERT_TRUE(r.ok());
  EXPECT_TRUE(r->timed_out);
  EXPECT_FALSE(r->cancelled);
  EXPECT_FALSE(r->succeeded());
  EXPECT_EQ(r->exit_code(), -1);
  EXPECT_EQ(DescribeWaitStatus(r->wait_status), "killed by signal 9");
  EXPECT_LT(MsSince(t0), 10'000);
}

TEST(SubprocessTest, KillsOnCancel) {
  SubprocessOptions o = ShellOptions();
  std::atomic<bool> cancel{false};
  o.cancel = &cancel;
  std::thread canceller([&] {
    std::this_thread::sleep_for(milliseconds(100));
    cancel = true;
  });
  const auto t0 = SteadyClock::now();
  Result<SubprocessResult> r = RunProcess({"/bin/sleep", "30"}, o);
  canceller.join();
  ASSERT_TRUE(r.ok());
  EXPECT_TRUE(r->cancelled);
  EXPECT_FALSE(r->timed_out);
  EXPECT_FALSE(r->succeeded());
  EXPECT_TRUE(WIFSIGNALED(r->wait_status) && WTERMSIG(r->wait_status) == SIGKILL);
  EXPECT_LT(MsSince(t0), 10'000);
}

TEST(SubprocessTest, DoesNotWaitForAGrandchildHoldingTheOutput) {
  const auto t0 = SteadyClock::now();
  Result<SubprocessResult> r = Sh("sleep 30 & echo $!", ShellOptions());
  ASSERT_TRUE(r.ok());
  EXPECT_TRUE(r->succeeded());
  EXPECT_LT(MsSince(t0), 10'000);
  const int grandchild = std::stoi(r->output);
  ASSERT_GT(grandchild, 0);
  kill(grandchild, SIGKILL);
}

TEST(SubprocessTest, NeverReapsAnotherChild) {
  // A child that is not RunProcess's: it exits at once and must stay a zombie for us to reap.
  pid_t other = 0;
  char* const argv[] = {const_cast<char*>("/bin/true"), nullptr};
  char* const envp[] = {nullptr};
  ASSERT_EQ(posix_spawn(&other, "/bin/true", nullptr, nullptr, argv, envp), 0);
  siginfo_t info = {};
  ASSERT_EQ(waitid(P_PID, other, &info, WEXITED | WNOWAIT), 0);  // exited, not reaped

  Result<SubprocessResult> r = Sh("sleep 0.1", ShellOptions());
  ASSERT_TRUE(r.ok());
  EXPECT_TRUE(r->succeeded());

  int status = -1;
  EXPECT_EQ(waitpid(other, &status, WNOHANG), other);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
}

TEST(SubprocessTest, WaitSaysSoWhenSomeoneElseReapedTheChild) {
  SubprocessOptions o = ShellOptions();
  Result<int> pid = SpawnProcess({"/bin/true"}, o);
  ASSERT_TRUE(pid.ok()) << pid.status().ToString();
  ASSERT_EQ(waitpid(*pid, nullptr, 0), *pid);
  Result<SubprocessResult> r = WaitProcess(*pid, -1, o);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), Code::kInternal);
  EXPECT_NE(r.status().message().find("is something else in this process reaping children?"),
            std::string::npos)
      << r.status().message();
}

TEST(SubprocessTest, MissingBinaryIsFailedPrecondition) {
  Result<SubprocessResult> r = RunProcess({"/nonexistent/tool", "x"}, ShellOptions());
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), Code::kFailedPrecondition);
  EXPECT_EQ(r.status().message(), "cannot run /nonexistent/tool: No such file or directory");
}

TEST(SubprocessTest, ExtraFdLandsOnItsTargetAndNothingElseLeaks) {
  Fd status_r, status_w;
  ASSERT_TRUE(MakeChannel(&status_r, &status_w).ok());
  // A descriptor without close-on-exec must not reach the child either.
  const int leaky = fcntl(status_w.get(), F_DUPFD, 20);
  ASSERT_GE(leaky, 0);
  Fd leaky_holder(leaky);

  SubprocessOptions o = ShellOptions();
  o.extra_fd = status_w.get();
  o.extra_fd_target = 5;
  const std::string script = "echo ready >&5; for fd in 3 4 " + std::to_string(leaky) +
                             "; do [ -e /proc/$$/fd/$fd ] && echo open $fd; done; echo checked";
  Result<SubprocessResult> r = Sh(script, o);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->output, "checked\n");
  status_w.Reset();
  leaky_holder.Reset();
  char buf[16] = {};
  EXPECT_EQ(read(status_r.get(), buf, sizeof buf), 6);
  EXPECT_STREQ(buf, "ready\n");
}

TEST(SubprocessTest, SpawnWithoutOutputPutsItOnDevNull) {
  SubprocessOptions o = ShellOptions();
  Result<int> pid = SpawnProcess({"/bin/sh", "-c", "echo lost; echo lost >&2; exit 4"}, o);
  ASSERT_TRUE(pid.ok());
  Result<SubprocessResult> r = WaitProcess(*pid, -1, o);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->exit_code(), 4);
  EXPECT_EQ(r->output, "");
}

}  // namespace
}  // namespace gantry
