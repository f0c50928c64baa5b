#pragma once
// JobWaiters: the long-polls waiting for a job to end (/runsync, WaitForJob). Each is answered
// exactly once: with the job when it ends (Notify), with nullptr when the job is deleted
// (Notify too), or with the job as it is when its wait runs out.
//
// Threading: not thread-safe; every call, and every callback, happens on the thread of the
// JobManager that owns it. The waits are deadlines on the DeadlineQueue, so they run out only
// from its Tick().

#include <cstdint>
#include <functional>
#include <string>
#include <unordered_map>
#include <vector>

#include "jobs/deadline_queue.h"
#include "jobs/job.h"

namespace gantry::jobs {

class JobWaiters {
 public:
  using Callback = std::function<void(const Job* job)>;  // nullptr: the job was deleted
  // The job with this id, or nullptr when there is none (any more).
  using FindJob = std::function<const Job*(const std::string& job_id)>;

  // `deadlines` must outlive this.
  JobWaiters(DeadlineQueue* deadlines, FindJob find_job);
  JobWaiters(const JobWaiters&) = delete;
  JobWaiters& operator=(const JobWaiters&) = delete;

  // Waits for the job to end, until `until_ms` at the latest.
  void Add(const std::string& job_id, int64_t until_ms, Callback cb);
  // Answers every waiter of the job with `job` (nullptr: it is being deleted).
  void Notify(const std::string& job_id, const Job* job);

  size_t size() const { return waiters_.size(); }  // jobs waited for

 private:
  struct Waiter {
    uint64_t id;
    Callback cb;
    Deadline timer;
  };

  void WaitDue(const DeadlineQueue::Due& d);

  DeadlineQueue* deadlines_;
  FindJob find_job_;
  DeadlineQueue::Kind wait_kind_;                                 // key: job id; tag: waiter id
  std::unordered_map<std::string, std::vector<Waiter>> waiters_;  // job id -> waiters
  uint64_t next_waiter_id_ = 1;
};

}  // namespace gantry::jobs
