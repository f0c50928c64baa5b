#pragma once
// FakeProcessRuntime: a ProcessRuntime for agent tests. No process is started: the test decides
// when a "process" exits and what it prints.
//
// Behaves like a runtime whose children honour SIGTERM: Stop() and StopAll() make the process
// exit with SIGTERM (SIGKILL if grace_ms <= 0), reported by the next Reap(). Thread-safe, so a
// test may drive it while the agent runs on another thread.

#include <mutex>
#include <string>
#include <vector>

#include "agent/process/process_runtime.h"

namespace gantry::agent {

class FakeProcessRuntime final : public ProcessRuntime {
 public:
  struct StopCall {
    std::string id;
    int64_t grace_ms = 0;
  };

  // `clock` (not owned) stamps exits and lines.
  explicit FakeProcessRuntime(const Clock* clock) : clock_(clock) {}

  Result<int> Start(const ProcessSpec& spec) override;
  // Calls `launch` with a context holding no fds and no cgroup, and records the spec in
  // launches() (not in starts()); the launcher's pid is then a running "process".
  Result<int> Launch(const ProcessSpec& spec, const Launcher& launch) override;
  // No cgroups here: no procs files.
  Result<std::vector<std::string>> CreateCgroup(const std::string&, const Limits&) override {
    return std::vector<std::string>{};
  }
  void RemoveCgroup(const std::string&) override {}
  void Stop(const std::string& id, int64_t grace_ms) override;
  std::vector<ProcessExit> Reap() override;
  std::vector<LogLine> DrainLogs() override;
  std::vector<std::string> Running() const override;
  void StopAll(int64_t grace_ms) override;
  std::string limits_note() const override { return ""; }
  std::string limits_summary() const override { return "fake"; }

  // Test controls. Ids that are not running are ignored.
  // The next Start() fails with `status` (and is still recorded in starts()).
  void FailNextStart(Status status);
  // The process exits with `exit_code`.
  void Exit(const std::string& id, int exit_code);
  // The process is killed by `signal` (by the OOM killer: SIGKILL and oom_killed).
  void Kill(const std::string& id, int signal, bool oom_killed = false);
  // The process prints a line.
  void Emit(const std::string& id, const std::string& text, bool stderr_stream = false);

  // Every Start() and Stop() call so far, in order (StopAll() records a Stop per process).
  std::vector<ProcessSpec> starts() const;
  std::vector<ProcessSpec> launches() const;
  std::vector<StopCall> stops() const;

 private:
  struct Proc {
    ProcessSpec spec;
    int pid = 0;
  };
  void ExitLocked(const std::string& id, int exit_code, int term_signal, bool oom_killed);

  const Clock* clock_;
  mutable std::mutex mu_;
  std::vector<Proc> running_;  // GUARDED_BY(mu_), in start order
  std::vector<ProcessExit> exits_;
  std::vector<LogLine> lines_;
  std::vector<ProcessSpec> starts_;
  std::vector<ProcessSpec> launches_;
  std::vector<StopCall> stops_;
  Status fail_next_start_;
  int next_pid_ = 1000;
};

}  // namespace gantry::agent
