#pragma once
// Stops: the jobs a worker has been asked to stop (cancelled, timed out, expired, or their
// endpoint deleted while they ran), and the job-stop long-polls through which workers learn of
// them (runpod-protocol.md, `job-stop/{worker}`).
//
// A stop is offered to its worker's poll at once, and offered again every `reoffer_ms` while
// it stands. It ends when the worker answers for the job (job-done), when a ping of the worker
// no longer lists the job after the stop was offered, when the job is queued again, or when the
// worker is lost. A stop that still stands `grace_ms` after it was requested has its worker
// killed, through `kill`.
//
// Threading: not thread-safe; every call, and every callback it makes, happens on the thread of
// the JobManager that owns it. Time comes from the Clock; the grace and the polls' waits are
// deadlines on the DeadlineQueue, so they end only from its Tick().

#include <cstdint>
#include <functional>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "common/env.h"
#include "jobs/deadline_queue.h"

namespace gantry::jobs {

class Stops {
 public:
  // Called when a worker must be killed: it ignored a stop for longer than the grace period.
  using KillWorker = std::function<void(const std::string& worker_id, const std::string& why)>;
  // A poll's answer: the ids of the jobs to stop (empty: none before the wait ended).
  using PollCallback = std::function<void(std::vector<std::string> job_ids)>;

  struct Options {
    int64_t grace_ms = 30'000;   // A stop's worker is killed after this. Default: 30 s.
    int64_t reoffer_ms = 1'000;  // A standing stop is offered again this often. Default: 1 s.
  };

  // `clock` and `deadlines` must outlive this.
  Stops(const Clock* clock, DeadlineQueue* deadlines, Options options, KillWorker kill);
  Stops(const Stops&) = delete;
  Stops& operator=(const Stops&) = delete;

  // Asks `worker_id` to stop `job_id`, replacing a stop of the job already standing (its grace
  // starts anew). A job with no worker (empty id) has nobody to stop: ignored.
  void Request(const std::string& job_id, const std::string& worker_id);
  // The job's stop, if any, is over (the job is queued again).
  void Clear(const std::string& job_id);
  // The worker gave a final answer for the job: a stop it was asked for is over.
  void Answered(const std::string& worker_id, const std::string& job_id);
  // A ping of the worker, which runs `running`: its stops that were offered, of jobs it no
  // longer runs, are over.
  void Ping(const std::string& worker_id, const std::unordered_set<std::string>& running);
  // The worker is gone: its waiting poll is answered with no ids and its stops are over.
  void WorkerLost(const std::string& worker_id);
  // A job-stop long-poll: `cb` gets the stops due to be offered to the worker, at once or as
  // soon as one is, or none when `wait_ms` passes. A newer poll of the worker answers the one
  // waiting with no ids.
  void Poll(const std::string& worker_id, int64_t wait_ms, PollCallback cb);

  size_t size() const { return stops_.size(); }  // stops standing

 private:
  struct Stop {
    std::string worker_id;
    int64_t requested_ms;
    int64_t offered_ms = 0;  // 0: never offered
  };
  struct Waiter {
    uint64_t id = 0;
    PollCallback cb;
    Deadline timer;
  };

  // The worker's stops due to be offered at `now`.
  std::vector<std::string> Due(const std::string& worker_id, int64_t now);
  // Answers the worker's waiting poll with its due stops, if it has both.
  void Offer(const std::string& worker_id);
  // Removes the worker's waiting poll, if any, and answers it with no ids.
  void EndWait(const std::string& worker_id);
  void WaitDue(const DeadlineQueue::Due& d);   // a poll's wait ran out
  void GraceDue(const DeadlineQueue::Due& d);  // a stop's grace ran out

  const Clock* clock_;
  DeadlineQueue* deadlines_;
  Options options_;
  KillWorker kill_;
  DeadlineQueue::Kind wait_kind_;                    // key: worker id; tag: waiter id
  DeadlineQueue::Kind reoffer_kind_;                 // key: worker id
  DeadlineQueue::Kind grace_kind_;                   // key: job id; tag: the stop's requested_ms
  std::unordered_map<std::string, Stop> stops_;      // job id -> its stop
  std::unordered_map<std::string, Waiter> waiters_;  // worker id -> its waiting poll
  uint64_t next_waiter_id_ = 1;
};

}  // namespace gantry::jobs
