#include "agent/process/fake_process_runtime.h"

#include <signal.h>

#include <algorithm>
#include <utility>

namespace gantry::agent {

Result<int> FakeProcessRuntime::Start(const ProcessSpec& spec) {
  std::lock_guard<std::mutex> lock(mu_);
  starts_.push_back(spec);
  if (!fail_next_start_.ok()) return std::exchange(fail_next_start_, Status::Ok());
  for (const Proc& p : running_) {
    if (p.spec.id == spec.id) return AlreadyExists("process " + spec.id + " is running");
  }
  running_.push_back({spec, next_pid_++});
  return running_.back().pid;
}

Result<int> FakeProcessRuntime::Launch(const ProcessSpec& spec, const Launcher& launch) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    launches_.push_back(spec);
    for (const Proc& p : running_) {
      if (p.spec.id == spec.id) return AlreadyExists("process " + spec.id + " is running");
    }
  }
  Result<int> pid = launch(spec, LaunchContext{});  // unlocked: the launcher may call back
  if (!pid.ok()) return pid;
  std::lock_guard<std::mutex> lock(mu_);
  running_.push_back({spec, *pid});
  return *pid;
}

void FakeProcessRuntime::Stop(const std::string& id, int64_t grace_ms) {
  std::lock_guard<std::mutex> lock(mu_);
  stops_.push_back({id, grace_ms});
  ExitLocked(id, -1, grace_ms > 0 ? SIGTERM : SIGKILL, false);
}

std::vector<ProcessExit> FakeProcessRuntime::Reap() {
  std::lock_guard<std::mutex> lock(mu_);
  return std::exchange(exits_, {});
}

std::vector<LogLine> FakeProcessRuntime::DrainLogs() {
  std::lock_guard<std::mutex> lock(mu_);
  return std::exchange(lines_, {});
}

std::vector<std::string> FakeProcessRuntime::Running() const {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<std::string> ids;
  for (const Proc& p : running_) ids.push_back(p.spec.id);
  std::sort(ids.begin(), ids.end());
  return ids;
}

void FakeProcessRuntime::StopAll(int64_t grace_ms) {
  for (const std::string& id : Running()) Stop(id, grace_ms);
}

void FakeProcessRuntime::FailNextStart(Status status) {
  std::lock_guard<std::mutex> lock(mu_);
  fail_next_start_ = std::move(status);
}

void FakeProcessRuntime::Exit(const std::string& id, int exit_code) {
  std::lock_guard<std::mutex> lock(mu_);
  ExitLocked(id, exit_code, 0, false);
}

void FakeProcessRuntime::Kill(const std::string& id, int signal, bool oom_killed) {
  std::lock_guard<std::mutex> lock(mu_);
  ExitLocked(id, -1, signal, oom_killed);
}

void FakeProcessRuntime::ExitLocked(const std::string& id, int exit_code, int term_signal,
                                    bool oom_killed) {
  auto it = std::find_if(running_.begin(), running_.end(),
                         [&](const Proc& p) { return p.spec.id == id; });
  if (it == running_.end()) return;
  exits_.push_back({id, it->pid, exit_code, term_signal, oom_killed, clock_->NowMs()});
  running_.erase(it);
}

void FakeProcessRuntime::Emit(const std::string& id, const std::string& text, bool stderr_stream) {
  std::lock_guard<std::mutex> lock(mu_);
  for (const Proc& p : running_) {
    if (p.spec.id == id) lines_.push_back({id, stderr_stream, text, clock_->NowMs()});
  }
}

std::vector<ProcessSpec> FakeProcessRuntime::launches() const {
  std::lock_guard<std::mutex> lock(mu_);
  return launches_;
}

std::vector<ProcessSpec> FakeProcessRuntime::starts() const {
  std::lock_guard<std::mutex> lock(mu_);
  return starts_;
}

std::vector<FakeProcessRuntime::StopCall> FakeProcessRuntime::stops() const {
  std::lock_guard<std::mutex> lock(mu_);
  return stops_;
}

}  // namespace gantry::agent
