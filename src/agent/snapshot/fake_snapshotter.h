#pragma once
// FakeSnapshotter: a Snapshotter for agent tests. Touches no process and no file: it records the
// calls, remembers which pid was dumped into which directory, and fails when told to.
// Thread-safe, so a test may drive it while the agent runs on another thread.

#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "agent/snapshot/snapshotter.h"

namespace gantry::agent {

class FakeSnapshotter final : public Snapshotter {
 public:
  struct DumpCall {
    int pid = 0;
    std::string dir;
    bool leave_running = false;
  };
  struct RestoreCall {
    std::string dir;
    RestoreMode mode = RestoreMode::kFull;
  };

  // Returns the status set by SetCheckStatus() (default: ok).
  Status Check() override;
  // Fails with the status given to FailNextDump(), if any; otherwise remembers `pid` as the
  // image in `dir` and succeeds. No process is killed, even without leave_running.
  Status Dump(int pid, const std::string& dir, bool leave_running) override;
  // Fails with the status given to FailNextRestore(), if any; otherwise returns the pid given to
  // SetRestorePid() if set, else the pid last dumped into `dir`, else NotFound.
  Result<int> Restore(const std::string& dir, RestoreMode mode, int netns_fd = -1) override;

  // Test controls.
  void SetCheckStatus(Status status);
  void FailNextDump(Status status);
  void FailNextRestore(Status status);
  void SetRestorePid(int pid);

  // Every Dump() and Restore() call so far (failed ones included), in order.
  std::vector<DumpCall> dumps() const;
  std::vector<RestoreCall> restores() const;

 private:
  mutable std::mutex mu_;
  Status check_status_;                      // guarded by mu_
  std::optional<Status> fail_next_dump_;     // guarded by mu_
  std::optional<Status> fail_next_restore_;  // guarded by mu_
  std::optional<int> restore_pid_;           // guarded by mu_
  std::map<std::string, int> images_;        // dir -> dumped pid; guarded by mu_
  std::vector<DumpCall> dumps_;              // guarded by mu_
  std::vector<RestoreCall> restores_;        // guarded by mu_
};

}  // namespace gantry::agent
