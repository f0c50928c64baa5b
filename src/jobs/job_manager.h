#pragma once
// JobManager: the jobs of every endpoint through their state machine (job.h, DESIGN §3): submit,
// queue, take, results, streams, timeouts, retries, TTL and retention. job_manager.cc holds the
// client side and the lifecycle, job_manager_workers.cc the worker side. It owns the parts that
// have a contract of their own, each in its own file here and run on its thread:
//   EndpointQueue  an endpoint's queued jobs and its jobs counted by status (one per endpoint)
//   TakeWaiters    the job-takes waiting on an endpoint's queue (one per endpoint)
//   Leases         which jobs each worker holds, and since when each worker is idle
//   JobWaiters     the long-polls waiting for a job to end (and /stream's, for a chunk)
//   JobIndex       each endpoint's jobs in submission order, for paged listings
//   Stops          stop requests, the job-stop long-polls, the kill after the grace period
//   Webhooks       delivering a finished job to its webhook, and the retries
//   DeadlineQueue  the deadlines of all of the above, one callback per kind
//
// Threading: not thread-safe. Every call, and every callback it makes, happens on one thread
// (the server's event loop). Time comes only from the injected Clock, and deadlines fire only
// from Tick(), so tests drive it with a FakeClock.
//
// Durability: every state change is written to the Store. Submit() reports through its
// callback only once the job is durable; Finish() likewise for a result, which is shown to
// anyone (status, waiters, webhook) only once it is durable, and not at all if its write fails. A
// /run job is offered to workers only once its record is durable, and forgotten if that write fails
// (its client got an error: a retry must not run it twice); a /runsync job, which is not written,
// at once.

#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "common/env.h"
#include "common/json.h"
#include "common/status.h"
#include "jobs/endpoint_queue.h"
#include "jobs/job.h"
#include "jobs/job_index.h"
#include "jobs/job_observer.h"
#include "jobs/job_waiters.h"
#include "jobs/leases.h"
#include "jobs/stops.h"
#include "jobs/take_waiters.h"
#include "jobs/webhooks.h"
#include "store/store.h"

namespace gantry::jobs {

struct JobsOptions {
  int64_t run_retention_ms = 30 * 60 * 1000;  // Finished /run jobs are kept. Default: 30 min.
  int64_t sync_retention_ms = 60 * 1000;      // Finished /runsync jobs. Default: 1 min.
  int64_t stop_grace_ms = 30'000;     // A stopped job's worker is killed after this. Default: 30 s.
  int64_t stop_reoffer_ms = 1'000;    // A pending stop is offered again this often. Default: 1 s.
  int64_t webhook_retry_ms = 10'000;  // Default: 10 s (RunPod).
  int webhook_retries = 2;            // Default: 2 (RunPod).
  int64_t webhook_timeout_ms = 10'000;
  // What one job may hold of its worker's stream (every chunk is kept for its final output) and
  // progress: past them the worker's post is refused (413) and the stream records the cut.
  size_t stream_max_bytes = 64u << 20;  // Default: 64 MiB.
  size_t stream_max_chunks = 65'536;
  size_t progress_max_bytes = 1u << 20;  // Default: 1 MiB.
};

// What Submit() needs, already validated by the API layer except for the policy ranges.
struct SubmitRequest {
  std::string endpoint_id;
  std::string input;      // raw JSON text of "input"
  std::string webhook;    // may be empty
  std::string s3_config;  // raw JSON or empty
  std::optional<int64_t> execution_timeout_ms;
  std::optional<int64_t> ttl_ms;
  bool low_priority = false;
  bool sync = false;
};

// What the autoscaler needs to know of an endpoint's queue.
struct QueueLoad {
  int64_t queued = 0;      // normal-priority jobs waiting
  int64_t queued_low = 0;  // low-priority jobs waiting
  int64_t running = 0;
  int64_t oldest_queued_ms = 0;  // creation time of the oldest normal queued job; 0: none
};

struct EndpointCounts {
  int64_t completed = 0, failed = 0, in_progress = 0, in_queue = 0, retried = 0;
};

// Outcome of a worker's job-done.
struct DoneOutcome {
  bool accepted = false;     // the body changed the job (false: duplicate or late)
  bool stop_worker = false;  // "stopPod": recycle the worker after this job
};

class JobManager {
 public:
  using WebhookPoster = Webhooks::Poster;
  using TakeCallback = TakeWaiters::Callback;
  using JobCallback = JobWaiters::Callback;  // nullptr: deleted meanwhile

  JobManager(const Clock* clock, store::Store* store, JobsOptions options, WebhookPoster poster);
  ~JobManager();

  // Rebuilds state from the store's records. Call once, before anything else.
  void Load(std::vector<store::JobRecord> records);

  // Endpoint lifecycle. Jobs for unknown endpoints are refused with NotFound.
  void SetEndpoint(const std::string& endpoint_id, QueueConfig config);
  void RemoveEndpoint(const std::string& endpoint_id);  // drops its queued and finished jobs
  bool HasEndpoint(const std::string& endpoint_id) const;

  // Client API. `durable` runs once the job is in the store (or with the store's error).
  Result<const Job*> Submit(SubmitRequest req, std::function<void(Status)> durable);
  const Job* Get(const std::string& job_id) const;
  // Drains the stream chunks not yet read.
  std::vector<std::string> DrainStream(const std::string& job_id);
  // Cancels a job that has not ended: written first, applied once durable (EndAfterWrite); a
  // job that ended meanwhile stays as it ended. `durable` runs then (at once for a job that
  // had ended, or whose change is not written), with the write's status.
  Result<const Job*> Cancel(const std::string& job_id, std::function<void(Status)> durable = {});
  // Queues a FAILED or TIMED_OUT job again: written first, applied once durable (a job retried
  // meanwhile stays as that made it). `durable` runs then, with the write's status.
  Result<const Job*> Retry(const std::string& job_id, std::function<void(Status)> durable = {});
  Result<int64_t> PurgeQueue(const std::string& endpoint_id);
  // Ends every queued job of the endpoint as FAILED with `error_json` (raw JSON), as if it had
  // run and failed: its waiters, webhook and store learn of it. Returns how many there were.
  int64_t FailQueued(const std::string& endpoint_id, const std::string& error_json);
  // Calls `cb` when the job ends, or with its current state when `wait_ms` passes.
  void WaitForJob(const std::string& job_id, int64_t wait_ms, JobCallback cb);
  // Calls `cb` with the job once it has a stream chunk not yet drained or has ended (at once
  // when it already has or did), or with its current state when `wait_ms` passes; nullptr when
  // it is deleted meanwhile. A /stream reader's loop then waits instead of spinning.
  void WaitForStream(const std::string& job_id, int64_t wait_ms, JobCallback cb);
  // Up to `limit` jobs of the endpoint, newest first, submitted before the job of seq
  // `before` (0: from the newest); JobPage::next pages on.
  JobPage RecentJobs(const std::string& endpoint_id, size_t limit, int64_t before) const;
  EndpointCounts Counts(const std::string& endpoint_id) const;
  QueueLoad LoadOf(const std::string& endpoint_id) const;
  // `observer` (not owned) hears of queued and finished jobs and overdue workers until it is
  // removed; it removes itself before it is destroyed. Not from within a callback.
  void AddObserver(JobObserver* observer) { observers_.push_back(observer); }
  void RemoveObserver(JobObserver* observer);

  // Worker API.
  // Hands up to `max` queued jobs to `worker_id`, waiting up to `wait_ms` for one to arrive.
  // `cb` gets the jobs now IN_PROGRESS on that worker (empty when the wait ended).
  void Take(const std::string& endpoint_id, const std::string& worker_id, int max, int64_t wait_ms,
            TakeCallback cb);
  // Jobs that were taken but never reached the worker (its connection was gone) go back to
  // the head of the queue without costing an attempt.
  void ReturnUndelivered(const std::string& worker_id, const std::vector<std::string>& job_ids);
  // A job-done body. A result is written before it is applied (WriteResult); `durable` runs
  // once the change (if any) is in the store, or with the store's error (nothing changed).
  Result<DoneOutcome> Finish(const std::string& worker_id, const std::string& job_id,
                             const json::value& body, bool is_stream,
                             std::function<void(Status)> durable);
  Status AppendStream(const std::string& worker_id, const std::string& job_id,
                      std::string chunk_json);
  // A heartbeat listing the jobs the worker runs. Held jobs it no longer lists are requeued
  // (after `ping_interval_ms` since their take, to allow for the report's lag).
  void Ping(const std::string& worker_id, const std::vector<std::string>& running,
            int64_t ping_interval_ms);
  // Long-poll for jobs this worker should stop. `cb` gets the ids (empty when the wait ended).
  void PollStops(const std::string& worker_id, int64_t wait_ms,
                 std::function<void(std::vector<std::string>)> cb);
  // The worker is gone: its jobs are requeued while attempts remain, else FAILED.
  void WorkerLost(const std::string& worker_id, const std::string& why);
  // Jobs held by the worker right now, and how many (without copying them).
  std::vector<std::string> HeldBy(const std::string& worker_id) const {
    return leases_.HeldBy(worker_id);
  }
  size_t HeldCount(const std::string& worker_id) const { return leases_.HeldCount(worker_id); }
  // Makes the job's record durable (a /runsync job is not written until its id is given out,
  // which is what this is called for); `durable` runs once it is.
  void MakeDurable(const std::string& job_id, std::function<void(Status)> durable);
  // Records that the job waited `waited_ms` for the cold start of `worker_id`.
  void MarkColdStart(const std::string& job_id, const std::string& worker_id, int64_t waited_ms);
  // When the worker last let go of a job (0: never); -1 while it holds one.
  int64_t IdleSince(const std::string& worker_id) const { return leases_.IdleSince(worker_id); }
  // Answers the worker's waiting job-takes with no job (it is about to be stopped).
  void DropWaiters(const std::string& worker_id);

  // Fires every deadline that is due. Call often (the server calls it every 20 ms).
  void Tick();

  size_t job_count() const { return jobs_.size(); }
  size_t timer_count() const { return deadlines_.size(); }

 private:
  struct EndpointState {
    EndpointState(DeadlineQueue* deadlines, DeadlineQueue::Kind take_wait, const std::string& id)
        : waiters(deadlines, take_wait, id) {}
    QueueConfig config;
    EndpointQueue queue;  // its queued jobs, and its jobs counted by status
    int64_t retried = 0;  // jobs queued again (requeued or retried)
    TakeWaiters waiters;  // the takes waiting for a job
  };

  // The endpoint's state, added if it has none yet (a job loaded before its SetEndpoint).
  EndpointState& Endpoint(const std::string& endpoint_id);

  // Writes the job's record (all of it with_input or on its first write, else all but the
  // input); `durable` runs once it is on disk. A change of a /runsync job that was never
  // written (no webhook, and its id not given out: MakeDurable writes it with_input) is not
  // written at all, and `durable` runs at once.
  void Persist(Job* job, bool with_input, std::function<void(Status)> durable = {});
  // Whether a change of `job` is not written at all (see Persist).
  static bool Unwritten(const Job& job);
  // Ends `j` with its worker's result (taking it back from the queue first if it was
  // requeued meanwhile).
  void Complete(Job* j, const std::string& worker_id, JobStatus status, std::string output,
                std::string error);
  // Writes `j`'s result first and applies it (Complete) only once the write is durable: until
  // then nobody sees it (status, waiters, webhook), and a failed write changes nothing (the
  // worker is answered 503 and posts it again). `durable` runs after.
  void WriteResult(Job* j, const std::string& worker_id, JobStatus status, std::string output,
                   std::string error, std::function<void(Status)> durable);
  // Writes `j`'s record as it will be once ended as `status` (with `output`, `error`), and runs
  // `end` (which ends it so) only once that write is durable and `still` holds for the job then
  // (what happened meanwhile came after, and decides); the store is then made to agree with
  // memory. A failed write changes nothing. `durable` runs last, with the write's status.
  void EndAfterWrite(Job* j, JobStatus status, const std::string& output, const std::string& error,
                     std::function<bool(const Job&)> still, std::function<void(Job*)> end,
                     std::function<void(Status)> durable);
  // The core of EndAfterWrite: writes `rec` (`j`'s record as `change` will leave it, without
  // its input), then applies `change` once durable if `still` holds.
  void ChangeAfterWrite(Job* j, store::JobRecord rec, std::function<bool(const Job&)> still,
                        std::function<void(Job*)> change, std::function<void(Status)> durable);
  // A copy of `j`'s record without its input (which an update never writes).
  static store::JobRecord RecordWithoutInput(Job* j);
  // What a retry does to a job's record (but its status): no output, error, attempts, start,
  // end or worker; created anew at `now`.
  static void ResetForRetry(store::JobRecord* rec, int64_t now);
  // A new job enters its endpoint's queue: counted, queued, its TTL armed, offered.
  void Accept(Job* job);
  void SetStatus(Job* job, JobStatus status);  // every status change goes through here
  void Enqueue(Job* job, bool front);          // SetStatus(IN_QUEUE) and PushQueue
  void PushQueue(Job* job, bool front);        // adds a queue entry for the job's current gen
  void TakeFrom(EndpointState& ep, const std::string& worker_id, int max,
                std::vector<const Job*>* out);
  void Dispatch(EndpointState& ep);
  void Start(Job* job, const std::string& worker_id);
  void Release(Job* job);  // drops the worker's hold on the job
  void Terminate(Job* job, JobStatus status, std::string output, std::string error);
  void Requeue(Job* job, const std::string& why);
  void DeleteJob(const std::string& job_id);

  // Deadlines: one callback per kind, each checking that its deadline still applies.
  void ArmTtl(Job* job);          // while not finished, from rec.created_ms
  void ArmExecTimeout(Job* job);  // while IN_PROGRESS, from rec.started_ms
  void ArmRetention(Job* job);    // once finished, from rec.completed_ms
  int64_t RetentionMs(const Job& job) const;
  void TtlDue(const DeadlineQueue::Due& d);
  void ExecTimeoutDue(const DeadlineQueue::Due& d);
  void RetentionDue(const DeadlineQueue::Due& d);
  void TakeWaitDue(const DeadlineQueue::Due& d);

  const Clock* clock_;
  store::Store* store_;
  JobsOptions options_;
  // First: the collaborators below register their kinds of deadline with it as they are built.
  DeadlineQueue deadlines_;
  DeadlineQueue::Kind take_wait_kind_;     // key: endpoint id; tag: waiter id
  DeadlineQueue::Kind exec_timeout_kind_;  // key: job id; tag: its rec.started_ms
  DeadlineQueue::Kind ttl_kind_;           // key: job id
  DeadlineQueue::Kind retention_kind_;     // key: job id
  Stops stops_;
  Webhooks webhooks_;
  JobWaiters job_waiters_;
  JobWaiters stream_waiters_;  // /stream readers waiting for a chunk or the job's end
  JobIndex index_;
  Leases leases_;

  std::unordered_map<std::string, std::shared_ptr<Job>> jobs_;
  std::unordered_map<std::string, EndpointState> endpoints_;
  std::vector<JobObserver*> observers_;
  int64_t next_seq_ = 1;
  FastRandom random_;  // job ids
};

}  // namespace gantry::jobs
