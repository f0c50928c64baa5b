#pragma once
// EndpointQueue: one endpoint's queued jobs in take order, and its jobs counted by status.
//
// An entry is (job, the job's queue_gen when it was pushed). Leaving the queue (taken,
// cancelled, purged, expired, deleted) costs nothing here: the JobManager changes the job's
// status, or marks it deleted, and bumps its queue_gen on every move into or out of IN_QUEUE,
// so the entry is stale from then on and skipped when met. A job queued again gets a new entry.
//
// The counts are the JobManager's to keep: it calls Count() at every change of status of one of
// the endpoint's jobs, and when one is added or deleted.
//
// Threading: not thread-safe; every call happens on the thread of the JobManager that owns it.

#include <cstdint>
#include <deque>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "jobs/job.h"

namespace gantry::jobs {

class EndpointQueue {
 public:
  // Adds an entry for the job under its current queue_gen: at the back, or at the front for a
  // job that goes back to the queue ahead of the others.
  void Push(std::shared_ptr<Job> job, bool front) {
    const uint64_t gen = job->queue_gen;
    if (front) {
      entries_.emplace_front(std::move(job), gen);
    } else {
      entries_.emplace_back(std::move(job), gen);
    }
  }
  // Removes the entries up to the first live one, that one included; returns its job, or
  // nullptr when there is none.
  Job* Pop();
  // The ids of the jobs with a live entry, in take order.
  std::vector<std::string> QueuedIds() const;
  void Clear() { entries_.clear(); }
  // Creation time (ms) of the oldest normal-priority job with a live entry; 0: none.
  int64_t OldestNormalCreatedMs() const;

  // `delta` jobs (+1, -1) of the endpoint now have status `s`.
  void Count(const Job& job, JobStatus s, int delta) {
    counts_[static_cast<int>(s)] += delta;
    if (s != JobStatus::kInQueue) return;
    if (job.rec.low_priority) queued_low_ += delta;
    queued_bytes_ += delta * static_cast<int64_t>(job.rec.input.size());
  }
  int64_t count(JobStatus s) const { return counts_[static_cast<int>(s)]; }
  int64_t queued_bytes() const { return queued_bytes_; }  // the inputs of IN_QUEUE jobs
  int64_t queued_low() const { return queued_low_; }      // low-priority jobs among IN_QUEUE ones

 private:
  static bool Live(const Job& job, uint64_t gen) {
    return !job.deleted && job.status == JobStatus::kInQueue && job.queue_gen == gen;
  }

  std::deque<std::pair<std::shared_ptr<Job>, uint64_t>> entries_;  // (job, gen) in take order
  int64_t counts_[6] = {0, 0, 0, 0, 0, 0};                         // jobs by JobStatus
  int64_t queued_low_ = 0;
  int64_t queued_bytes_ = 0;
};

}  // namespace gantry::jobs
