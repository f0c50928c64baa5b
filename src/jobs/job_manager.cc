#include "jobs/job_manager.h"

#include <algorithm>

#include "common/log.h"

namespace gantry::jobs {

using Due = DeadlineQueue::Due;

// A UUID-shaped id, as RunPod's job ids are.
static std::string NewJobId(FastRandom& random) {
  std::string hex = random.Hex(32);
  return hex.substr(0, 8) + '-' + hex.substr(8, 4) + '-' + hex.substr(12, 4) + '-' +
         hex.substr(16, 4) + '-' + hex.substr(20, 12);
}

JobManager::JobManager(const Clock* clock, store::Store* store, JobsOptions options,
                       WebhookPoster poster)
    : clock_(clock),
      store_(store),
      options_(options),
      deadlines_(clock),
      take_wait_kind_(deadlines_.AddKind([this](const Due& d) { TakeWaitDue(d); })),
      exec_timeout_kind_(deadlines_.AddKind([this](const Due& d) { ExecTimeoutDue(d); })),
      ttl_kind_(deadlines_.AddKind([this](const Due& d) { TtlDue(d); })),
      retention_kind_(deadlines_.AddKind([this](const Due& d) { RetentionDue(d); })),
      stops_(clock, &deadlines_, {options.stop_grace_ms, options.stop_reoffer_ms},
             [this](const std::string& worker, const std::string& why) {
               for (JobObserver* o : observers_) {
                 o->OnWorkerOverdue(worker, why);
               }
             }),
      webhooks_(clock, &deadlines_, {options.webhook_retries, options.webhook_retry_ms},
                std::move(poster), [this](const std::string& id) { return Get(id); }),
      job_waiters_(&deadlines_, [this](const std::string& id) { return Get(id); }),
      stream_waiters_(&deadlines_, [this](const std::string& id) { return Get(id); }) {}

JobManager::~JobManager() = default;

bool JobManager::Unwritten(const Job& job) {
  return !job.stored && job.rec.sync && job.rec.webhook.empty();
}

void JobManager::Persist(Job* job, bool with_input, std::function<void(Status)> durable) {
  if (!with_input && Unwritten(*job)) {
    if (durable) durable(Status::Ok());  // see Submit: nobody outside this process needs it
    return;
  }
  ++job->writes;
  std::vector<store::Mutation> v;
  if (with_input || !job->stored) {  // the first write of a job carries its whole record
    job->stored = true;
    v.push_back(store::Mutation::PutJob(job->rec));
  } else {
    v.push_back(store::Mutation::UpdateJob(RecordWithoutInput(job)));
  }
  store_->Write(std::move(v), std::move(durable));
}

void JobManager::Load(std::vector<store::JobRecord> records) {
  for (auto& rec : records) {
    auto st = ParseStatus(rec.status);
    if (!st) {
      GLOG_WARN("store: job %s has unknown status %s; skipped", rec.id.c_str(), rec.status.c_str());
      continue;
    }
    auto job = std::make_shared<Job>();
    job->rec = std::move(rec);
    job->status = *st;
    next_seq_ = std::max(next_seq_, job->rec.seq + 1);
    Job* j = job.get();
    jobs_[j->rec.id] = std::move(job);
    index_.Add(j);
    // The endpoint's config arrives with SetEndpoint; its state exists from here on.
    Endpoint(j->rec.endpoint_id).queue.Count(*j, j->status, +1);
    switch (j->status) {
      case JobStatus::kInQueue:
        PushQueue(j, false);
        break;
      case JobStatus::kInProgress:
        leases_.Hold(j->rec.worker_id, j->rec.id);
        ArmExecTimeout(j);
        break;
      default:
        ArmRetention(j);
        break;
    }
    if (!IsTerminal(j->status)) ArmTtl(j);
  }
}

JobManager::EndpointState& JobManager::Endpoint(const std::string& endpoint_id) {
  return endpoints_.try_emplace(endpoint_id, &deadlines_, take_wait_kind_, endpoint_id)
      .first->second;
}

void JobManager::SetEndpoint(const std::string& endpoint_id, QueueConfig config) {
  Endpoint(endpoint_id).config = config;
}

bool JobManager::HasEndpoint(const std::string& endpoint_id) const {
  return endpoints_.count(endpoint_id) > 0;
}

void JobManager::RemoveEndpoint(const std::string& endpoint_id) {
  auto it = endpoints_.find(endpoint_id);
  if (it == endpoints_.end()) return;
  it->second.waiters.DropAll();
  std::vector<std::string> doomed;
  for (auto& [id, job] : jobs_) {
    if (job->rec.endpoint_id != endpoint_id) continue;
    if (job->status == JobStatus::kInProgress) {
      stops_.Request(job->rec.id, job->rec.worker_id);
      Terminate(job.get(), JobStatus::kCancelled, "", JsonQuote("endpoint deleted"));
      Persist(job.get(), false);
    } else {
      doomed.push_back(id);
    }
  }
  for (auto& id : doomed) DeleteJob(id);
  endpoints_.erase(endpoint_id);
}

Result<const Job*> JobManager::Submit(SubmitRequest req, std::function<void(Status)> durable) {
  auto ep_it = endpoints_.find(req.endpoint_id);
  if (ep_it == endpoints_.end()) return NotFound("endpoint not found: " + req.endpoint_id);
  EndpointState& ep = ep_it->second;
  int64_t exec = req.execution_timeout_ms.value_or(ep.config.execution_timeout_ms);
  if (exec < kMinExecutionTimeoutMs || exec > kMaxPolicyMs) {
    return InvalidArgument("policy.executionTimeout must be between 5000 and 604800000 ms");
  }
  int64_t ttl = req.ttl_ms.value_or(kDefaultTtlMs);
  if (ttl < kMinTtlMs || ttl > kMaxPolicyMs) {
    return InvalidArgument("policy.ttl must be between 10000 and 604800000 ms");
  }
  if (static_cast<size_t>(ep.queue.count(JobStatus::kInQueue)) >= ep.config.max_queue) {
    return ResourceExhausted("the endpoint's queue is full (" +
                             std::to_string(ep.config.max_queue) + " jobs)");
  }
  if (static_cast<size_t>(ep.queue.queued_bytes()) + req.input.size() >
      ep.config.max_queued_bytes) {
    return ResourceExhausted("the endpoint's queue is full: its jobs' inputs hold " +
                             std::to_string(ep.queue.queued_bytes()) + " bytes, and at most " +
                             std::to_string(ep.config.max_queued_bytes) + " may wait");
  }
  int64_t now = clock_->NowMs();
  auto job = std::make_shared<Job>();
  auto& r = job->rec;
  do {
    r.id = NewJobId(random_);
  } while (jobs_.count(r.id));
  r.endpoint_id = req.endpoint_id;
  r.status = StatusName(JobStatus::kInQueue);
  r.input = std::move(req.input);
  r.webhook = std::move(req.webhook);
  r.s3_config = std::move(req.s3_config);
  r.execution_timeout_ms = exec;
  r.ttl_ms = ttl;
  r.low_priority = req.low_priority;
  r.sync = req.sync;
  r.created_ms = now;
  r.seq = next_seq_++;
  Job* j = job.get();
  jobs_[r.id] = std::move(job);
  index_.Add(j);
  if (req.sync) {
    // A /runsync job is written only once its caller is given its id while it still runs
    // (MakeDurable), or, when it has a webhook to deliver, at its next change. Otherwise it
    // lives in memory only: a crash loses a job nobody was told about, or one whose caller
    // has its result (the record of a finished one is kept for sync_retention_ms).
    j->stored = false;
    Accept(j);
    if (durable) durable(Status::Ok());
    return static_cast<const Job*>(j);
  }
  // A /run job is offered to workers only once its record is durable: a write that fails
  // (a full disk) answers 503 and takes the job back, so that a client that retries does not
  // run it twice.
  j->committing = true;
  Persist(j, true, [this, id = r.id, durable = std::move(durable)](Status s) {
    auto it = jobs_.find(id);
    if (it != jobs_.end() && it->second->committing) {
      if (s.ok()) {
        it->second->committing = false;
        Accept(it->second.get());
      } else {
        // Taken back as if never submitted (still `committing`: it was never counted); its
        // record is deleted too, should the failed write have landed after all.
        GLOG_WARN("jobs: job %s not accepted: its record could not be written", id.c_str());
        DeleteJob(id);
      }
    }
    if (durable) durable(s);
  });
  return static_cast<const Job*>(j);
}

void JobManager::Accept(Job* j) {
  EndpointState& ep = Endpoint(j->rec.endpoint_id);
  ep.queue.Count(*j, JobStatus::kInQueue, +1);
  PushQueue(j, false);
  ArmTtl(j);
  Dispatch(ep);
  if (j->status == JobStatus::kInQueue) {
    for (JobObserver* o : observers_) o->OnJobQueued(j->rec.endpoint_id);
  }
}

void JobManager::RemoveObserver(JobObserver* observer) { std::erase(observers_, observer); }

const Job* JobManager::Get(const std::string& job_id) const {
  auto it = jobs_.find(job_id);
  return it == jobs_.end() ? nullptr : it->second.get();
}

std::vector<std::string> JobManager::DrainStream(const std::string& job_id) {
  auto it = jobs_.find(job_id);
  if (it == jobs_.end()) return {};
  return std::exchange(it->second->stream_pending, {});
}

void JobManager::SetStatus(Job* job, JobStatus status) {
  auto ep = endpoints_.find(job->rec.endpoint_id);
  if (ep != endpoints_.end()) {
    ep->second.queue.Count(*job, job->status, -1);
    ep->second.queue.Count(*job, status, +1);
  }
  if (job->status == JobStatus::kInQueue || status == JobStatus::kInQueue) ++job->queue_gen;
  job->status = status;
  job->rec.status = StatusName(status);
}

void JobManager::Enqueue(Job* job, bool front) {
  SetStatus(job, JobStatus::kInQueue);
  PushQueue(job, front);
}

void JobManager::PushQueue(Job* job, bool front) {
  Endpoint(job->rec.endpoint_id).queue.Push(jobs_.at(job->rec.id), front);
}

void JobManager::TakeFrom(EndpointState& ep, const std::string& worker_id, int max,
                          std::vector<const Job*>* out) {
  while (static_cast<int>(out->size()) < max) {
    Job* j = ep.queue.Pop();
    if (!j) break;
    Start(j, worker_id);
    out->push_back(j);
  }
}

void JobManager::Start(Job* job, const std::string& worker_id) {
  int64_t now = clock_->NowMs();
  SetStatus(job, JobStatus::kInProgress);
  job->rec.worker_id = worker_id;
  job->rec.started_ms = now;
  job->rec.attempts += 1;
  job->missed_pings = 0;
  job->progress.clear();
  leases_.Hold(worker_id, job->rec.id);
  ArmExecTimeout(job);
  // A /runsync job's start is not written: its caller is waiting on this server, and after a
  // crash the job runs again from IN_QUEUE (at least once) instead of waiting for a worker's
  // late result. A /run job's start is written, so a restart does not run it twice.
  if (!job->rec.sync) Persist(job, false);
}

void JobManager::Dispatch(EndpointState& ep) {
  while (!ep.waiters.empty() && ep.queue.count(JobStatus::kInQueue) > 0) {
    TakeWaiters::Waiter w = ep.waiters.PopFront();
    std::vector<const Job*> out;
    TakeFrom(ep, w.worker_id, w.max, &out);
    w.cb(std::move(out));
  }
}

void JobManager::Release(Job* job) {
  job->exec_timer.Cancel();
  leases_.Release(job->rec.worker_id, job->rec.id, clock_->NowMs());
}

void JobManager::Terminate(Job* job, JobStatus status, std::string output, std::string error) {
  int64_t now = clock_->NowMs();
  if (job->status == JobStatus::kInProgress) Release(job);
  SetStatus(job, status);
  job->rec.output = std::move(output);
  job->rec.error = std::move(error);
  job->rec.completed_ms = now;
  job->progress.clear();
  if (job->rec.started_ms > 0) {
    for (JobObserver* o : observers_)
      o->OnJobFinished(job->rec.endpoint_id, now - job->rec.started_ms);
  }
  job->ttl_timer.Cancel();
  ArmRetention(job);
  job_waiters_.Notify(job->rec.id, job);
  stream_waiters_.Notify(job->rec.id, job);
  webhooks_.Send(*job);
}

void JobManager::Requeue(Job* job, const std::string& why) {
  auto& ep = Endpoint(job->rec.endpoint_id);
  stops_.Clear(job->rec.id);
  if (job->rec.attempts < ep.config.max_attempts) {
    Release(job);
    job->rec.started_ms = 0;
    job->progress.clear();
    ++ep.retried;
    Enqueue(job, true);
    Persist(job, false);
    Dispatch(ep);
  } else {
    Terminate(job, JobStatus::kFailed, "",
              JsonQuote(why + " (attempt " + std::to_string(job->rec.attempts) + " of " +
                        std::to_string(ep.config.max_attempts) + ")"));
    Persist(job, false);
  }
}

void JobManager::DeleteJob(const std::string& job_id) {
  auto it = jobs_.find(job_id);
  if (it == jobs_.end()) return;
  Job* j = it->second.get();
  if (j->status == JobStatus::kInProgress) Release(j);
  j->ttl_timer.Cancel();
  auto ep = endpoints_.find(j->rec.endpoint_id);
  if (ep != endpoints_.end() && !j->committing) ep->second.queue.Count(*j, j->status, -1);
  j->deleted = true;  // a queue entry may still hold it: stale from now on
  job_waiters_.Notify(job_id, nullptr);
  stream_waiters_.Notify(job_id, nullptr);
  index_.Remove(j);
  if (j->stored) store_->Write({store::Mutation::DeleteJob(job_id, j->rec.seq)}, {});
  jobs_.erase(it);
}

Result<const Job*> JobManager::Cancel(const std::string& job_id,
                                      std::function<void(Status)> durable) {
  auto it = jobs_.find(job_id);
  if (it == jobs_.end()) return NotFound("job not found: " + job_id);
  Job* j = it->second.get();
  if (j->committing) return Unavailable("job " + job_id + " is not accepted yet: try again");
  auto end = [this](Job* job) {
    if (job->status == JobStatus::kInProgress) stops_.Request(job->rec.id, job->rec.worker_id);
    Terminate(job, JobStatus::kCancelled, "", "");
  };
  if (IsTerminal(j->status) || Unwritten(*j)) {  // ended, or a /runsync job nobody else needs
    if (!IsTerminal(j->status)) end(j);
    if (durable) durable(Status::Ok());
    return static_cast<const Job*>(j);
  }
  EndAfterWrite(
      j, JobStatus::kCancelled, "", "", [](const Job& job) { return !IsTerminal(job.status); }, end,
      std::move(durable));
  return static_cast<const Job*>(j);
}

Result<const Job*> JobManager::Retry(const std::string& job_id,
                                     std::function<void(Status)> durable) {
  auto it = jobs_.find(job_id);
  if (it == jobs_.end()) return NotFound("job not found: " + job_id);
  Job* j = it->second.get();
  if (j->status != JobStatus::kFailed && j->status != JobStatus::kTimedOut) {
    return FailedPrecondition(
        std::string("only FAILED or TIMED_OUT jobs can be retried; this one is ") +
        StatusName(j->status));
  }
  if (!endpoints_.count(j->rec.endpoint_id)) return NotFound("endpoint not found");
  const int64_t now = clock_->NowMs();
  auto requeue = [this, now](Job* job) {
    auto& ep = Endpoint(job->rec.endpoint_id);
    ResetForRetry(&job->rec, now);
    job->stream_pending.clear();
    job->stream_all.clear();
    ++ep.retried;
    Enqueue(job, false);
    ArmTtl(job);  // anew, from its new creation time
    Dispatch(ep);
  };
  if (Unwritten(*j)) {  // a /runsync job nobody else needs: nothing to write
    requeue(j);
    if (durable) durable(Status::Ok());
    return static_cast<const Job*>(j);
  }
  store::JobRecord rec = RecordWithoutInput(j);
  ResetForRetry(&rec, now);
  rec.status = StatusName(JobStatus::kInQueue);
  ChangeAfterWrite(
      j, std::move(rec),
      [](const Job& job) {
        return job.status == JobStatus::kFailed || job.status == JobStatus::kTimedOut;
      },
      requeue, std::move(durable));
  return static_cast<const Job*>(j);
}

void JobManager::ResetForRetry(store::JobRecord* rec, int64_t now) {
  rec->output.clear();
  rec->error.clear();
  rec->attempts = 0;
  rec->started_ms = 0;
  rec->completed_ms = 0;
  rec->worker_id.clear();
  rec->created_ms = now;
}

Result<int64_t> JobManager::PurgeQueue(const std::string& endpoint_id) {
  auto it = endpoints_.find(endpoint_id);
  if (it == endpoints_.end()) return NotFound("endpoint not found: " + endpoint_id);
  std::vector<std::string> ids = it->second.queue.QueuedIds();
  for (auto& id : ids) DeleteJob(id);
  it->second.queue.Clear();  // every entry is stale now
  return static_cast<int64_t>(ids.size());
}

int64_t JobManager::FailQueued(const std::string& endpoint_id, const std::string& error_json) {
  auto it = endpoints_.find(endpoint_id);
  if (it == endpoints_.end()) return 0;
  std::vector<std::string> ids = it->second.queue.QueuedIds();
  for (const auto& id : ids) {
    Job* j = jobs_.at(id).get();
    Terminate(j, JobStatus::kFailed, "", error_json);
    Persist(j, false);
  }
  return static_cast<int64_t>(ids.size());
}

void JobManager::WaitForJob(const std::string& job_id, int64_t wait_ms, JobCallback cb) {
  auto it = jobs_.find(job_id);
  if (it == jobs_.end()) return cb(nullptr);
  if (IsTerminal(it->second->status) || wait_ms <= 0) return cb(it->second.get());
  job_waiters_.Add(job_id, clock_->NowMs() + wait_ms, std::move(cb));
}

void JobManager::WaitForStream(const std::string& job_id, int64_t wait_ms, JobCallback cb) {
  auto it = jobs_.find(job_id);
  if (it == jobs_.end()) return cb(nullptr);
  const Job* j = it->second.get();
  if (!j->stream_pending.empty() || IsTerminal(j->status) || wait_ms <= 0) return cb(j);
  stream_waiters_.Add(job_id, clock_->NowMs() + wait_ms, std::move(cb));
}

JobPage JobManager::RecentJobs(const std::string& endpoint_id, size_t limit, int64_t before) const {
  return index_.Recent(endpoint_id, limit, before);
}

void JobManager::MarkColdStart(const std::string& job_id, const std::string& worker_id,
                               int64_t waited_ms) {
  auto it = jobs_.find(job_id);
  if (it == jobs_.end()) return;
  it->second->cold_start_worker = worker_id;
  it->second->cold_start_wait_ms = std::max<int64_t>(0, waited_ms);
}

void JobManager::MakeDurable(const std::string& job_id, std::function<void(Status)> durable) {
  auto it = jobs_.find(job_id);
  if (it != jobs_.end() && !it->second->stored)
    return Persist(it->second.get(), true, std::move(durable));
  store_->Write({}, std::move(durable));  // a barrier: whatever was queued for it is durable
}

QueueLoad JobManager::LoadOf(const std::string& endpoint_id) const {
  QueueLoad l;
  auto it = endpoints_.find(endpoint_id);
  if (it == endpoints_.end()) return l;
  const EndpointQueue& q = it->second.queue;
  l.queued_low = q.queued_low();
  l.queued = q.count(JobStatus::kInQueue) - q.queued_low();
  l.running = q.count(JobStatus::kInProgress);
  l.oldest_queued_ms = q.OldestNormalCreatedMs();
  return l;
}

EndpointCounts JobManager::Counts(const std::string& endpoint_id) const {
  EndpointCounts c;
  auto ep = endpoints_.find(endpoint_id);
  if (ep == endpoints_.end()) return c;
  const EndpointQueue& q = ep->second.queue;
  c.in_queue = q.count(JobStatus::kInQueue);
  c.in_progress = q.count(JobStatus::kInProgress);
  c.completed = q.count(JobStatus::kCompleted);
  c.failed = q.count(JobStatus::kFailed) + q.count(JobStatus::kTimedOut);
  c.retried = ep->second.retried;
  return c;
}

void JobManager::Tick() { deadlines_.Tick(); }

// The deadlines of a job's own life: its TTL while unfinished, its execution timeout while it
// runs, its retention once finished. Each fires only if it still applies.

void JobManager::ArmTtl(Job* job) {
  deadlines_.At(job->rec.created_ms + job->rec.ttl_ms, ttl_kind_, job->rec.id, 0, &job->ttl_timer);
}

void JobManager::ArmExecTimeout(Job* job) {
  deadlines_.At(job->rec.started_ms + job->rec.execution_timeout_ms, exec_timeout_kind_,
                job->rec.id, static_cast<uint64_t>(job->rec.started_ms), &job->exec_timer);
}

int64_t JobManager::RetentionMs(const Job& job) const {
  return job.rec.sync ? options_.sync_retention_ms : options_.run_retention_ms;
}

void JobManager::ArmRetention(Job* job) {
  deadlines_.At(job->rec.completed_ms + RetentionMs(*job), retention_kind_, job->rec.id, 0);
}

void JobManager::TtlDue(const Due& d) {
  auto it = jobs_.find(d.key);
  if (it == jobs_.end()) return;
  Job* j = it->second.get();
  if (IsTerminal(j->status) || j->rec.created_ms + j->rec.ttl_ms > d.when_ms) return;
  if (j->status == JobStatus::kInProgress) stops_.Request(j->rec.id, j->rec.worker_id);
  DeleteJob(d.key);
}

void JobManager::ExecTimeoutDue(const Due& d) {
  auto it = jobs_.find(d.key);
  if (it == jobs_.end()) return;
  Job* j = it->second.get();
  if (j->status != JobStatus::kInProgress || static_cast<uint64_t>(j->rec.started_ms) != d.tag) {
    return;
  }
  stops_.Request(j->rec.id, j->rec.worker_id);
  Terminate(j, JobStatus::kTimedOut, "",
            JsonQuote("execution timeout of " + std::to_string(j->rec.execution_timeout_ms) +
                      " ms exceeded"));
  Persist(j, false);
}

void JobManager::RetentionDue(const Due& d) {
  auto it = jobs_.find(d.key);
  if (it == jobs_.end()) return;
  const Job* j = it->second.get();
  if (!IsTerminal(j->status) || j->rec.completed_ms + RetentionMs(*j) > d.when_ms) return;
  DeleteJob(d.key);
}

void JobManager::TakeWaitDue(const Due& d) {
  auto ep = endpoints_.find(d.key);
  if (ep != endpoints_.end()) ep->second.waiters.Expire(d.tag);
}

}  // namespace gantry::jobs
