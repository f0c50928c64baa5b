#pragma once
// What the JobManager tells the modules built on it. A module depends only on the modules above
// it (DESIGN §6): jobs cannot call the scheduler or metering, so they subscribe here, each at its
// own construction (JobManager::AddObserver) and until its destruction. Calls come on the loop
// thread once the JobManager's own state is consistent; an observer may call back into it.

#include <cstdint>
#include <string>

namespace gantry::jobs {

class JobObserver {
 public:
  virtual ~JobObserver() = default;
  // A submitted job was queued: the autoscaler reacts at once.
  virtual void OnJobQueued(const std::string& endpoint_id) {}
  // A job that ran on a worker ended after `execution_ms` on it (metering).
  virtual void OnJobFinished(const std::string& endpoint_id, int64_t execution_ms) {}
  // The worker ignored a stop for longer than the grace period: it must be killed.
  virtual void OnWorkerOverdue(const std::string& worker_id, const std::string& why) {}
};

}  // namespace gantry::jobs
