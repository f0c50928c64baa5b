#pragma once
// TakeWaiters: the job-take long-polls waiting on one endpoint's queue, oldest first. Each is
// answered exactly once: with the jobs the JobManager hands it once one is queued (it takes the
// waiter with PopFront), or with none when its wait runs out (Expire), when its worker is
// dropped (Drop) or when the endpoint goes (DropAll).
//
// Threading: not thread-safe; every call, and every callback, happens on the thread of the
// JobManager that owns it. The waits are deadlines on the DeadlineQueue, so they run out only
// from its Tick(): the callback of their kind calls Expire().

#include <cstdint>
#include <deque>
#include <functional>
#include <string>
#include <vector>

#include "jobs/deadline_queue.h"
#include "jobs/job.h"

namespace gantry::jobs {

class TakeWaiters {
 public:
  using Callback = std::function<void(std::vector<const Job*> jobs)>;
  struct Waiter {
    uint64_t id;
    std::string worker_id;
    int max;  // jobs it takes at most
    Callback cb;
    Deadline timer;
  };

  // The waits are deadlines of `wait_kind`, keyed `endpoint_id` and tagged with the waiter's id;
  // `deadlines` must outlive this.
  TakeWaiters(DeadlineQueue* deadlines, DeadlineQueue::Kind wait_kind, std::string endpoint_id)
      : deadlines_(deadlines), wait_kind_(wait_kind), endpoint_id_(std::move(endpoint_id)) {}

  bool empty() const { return waiters_.empty(); }
  size_t size() const { return waiters_.size(); }

  // Adds a waiter at the back, waiting until `until_ms` at the latest.
  void Add(std::string worker_id, int max, int64_t until_ms, Callback cb);
  // Removes the oldest waiter and returns it, its wait cancelled. Not when empty().
  Waiter PopFront();
  // The wait of waiter `id` ran out: it is answered with no jobs (if still waiting).
  void Expire(uint64_t id);
  // Answers the waiters of `worker_id` with no jobs.
  void Drop(const std::string& worker_id);
  // Answers every waiter with no jobs.
  void DropAll();

 private:
  DeadlineQueue* deadlines_;
  DeadlineQueue::Kind wait_kind_;
  std::string endpoint_id_;
  std::deque<Waiter> waiters_;
  uint64_t next_waiter_id_ = 1;
};

}  // namespace gantry::jobs
