#include "agent/snapshot/fake_snapshotter.h"

#include <utility>

namespace gantry::agent {

Status FakeSnapshotter::Check() {
  std::lock_guard<std::mutex> lock(mu_);
  return check_status_;
}

Status FakeSnapshotter::Dump(int pid, const std::string& dir, bool leave_running) {
  std::lock_guard<std::mutex> lock(mu_);
  dumps_.push_back({pid, dir, leave_running});
  if (fail_next_dump_) {
    Status s = std::move(*fail_next_dump_);
    fail_next_dump_.reset();
    return s;
  }
  images_[dir] = pid;
  return Status::Ok();
}

Result<int> FakeSnapshotter::Restore(const std::string& dir, RestoreMode mode, int) {
  std::lock_guard<std::mutex> lock(mu_);
  restores_.push_back({dir, mode});
  if (fail_next_restore_) {
    Status s = std::move(*fail_next_restore_);
    fail_next_restore_.reset();
    return s;
  }
  if (restore_pid_) return *restore_pid_;
  auto it = images_.find(dir);
  if (it == images_.end()) return NotFound("fake snapshotter: no image in " + dir);
  return it->second;
}

void FakeSnapshotter::SetCheckStatus(Status status) {
  std::lock_guard<std::mutex> lock(mu_);
  check_status_ = std::move(status);
}

void FakeSnapshotter::FailNextDump(Status status) {
  std::lock_guard<std::mutex> lock(mu_);
  fail_next_dump_ = std::move(status);
}

void FakeSnapshotter::FailNextRestore(Status status) {
  std::lock_guard<std::mutex> lock(mu_);
  fail_next_restore_ = std::move(status);
}

void FakeSnapshotter::SetRestorePid(int pid) {
  std::lock_guard<std::mutex> lock(mu_);
  restore_pid_ = pid;
}

std::vector<FakeSnapshotter::DumpCall> FakeSnapshotter::dumps() const {
  std::lock_guard<std::mutex> lock(mu_);
  return dumps_;
}

std::vector<FakeSnapshotter::RestoreCall> FakeSnapshotter::restores() const {
  std::lock_guard<std::mutex> lock(mu_);
  return restores_;
}

}  // namespace gantry::agent
