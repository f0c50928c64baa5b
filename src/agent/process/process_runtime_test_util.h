#pragma once
// What the process runtime's tests share (process_runtime_test.cc, process_launch_test.cc): a
// real LocalProcessRuntime per test, with helpers that reap, drain and wait on it, and ways to
// look at processes through /proc. Test-only; header-only.

#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <fstream>
#include <iterator>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "agent/process/process_runtime.h"
#include "common/procfs.h"

namespace gantry::agent::process_test {

using std::chrono::milliseconds;
using std::chrono::steady_clock;

inline int64_t MsSince(steady_clock::time_point t0) {
  return std::chrono::duration_cast<milliseconds>(steady_clock::now() - t0).count();
}

// Dead: no /proc entry, or a zombie (orphans are reaped by PID 1, slowly on some hosts). Read
// through ProcState: an istreambuf_iterator over /proc/PID/stat threw (ESRCH from read) when
// the process was reaped between the open and the read, which a VM's slow clock made happen.
inline bool IsDead(int pid) {
  const char state = ProcState(pid);
  return state == 0 || state == 'Z' || state == 'X';
}

inline bool WaitDead(int pid, int timeout_ms = 3000) {
  auto t0 = steady_clock::now();
  while (!IsDead(pid)) {
    if (MsSince(t0) > timeout_ms) return false;
    std::this_thread::sleep_for(milliseconds(5));
  }
  return true;
}

inline std::string ReadAll(const std::string& path) {
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

}  // namespace gantry::agent::process_test
