// The worker side of the JobManager (RunPod's worker protocol, DESIGN §2.2): takes, results,
// stream chunks, heartbeats, stops and lost workers. Same class and thread as job_manager.cc.
#include <algorithm>
#include <unordered_set>

#include "common/log.h"
#include "jobs/job_manager.h"  // IWYU pragma: associated

namespace gantry::jobs {

void JobManager::Take(const std::string& endpoint_id, const std::string& worker_id, int max,
                      int64_t wait_ms, TakeCallback cb) {
  auto it = endpoints_.find(endpoint_id);
  if (it == endpoints_.end()) return cb({});
  EndpointState& ep = it->second;
  max = std::max(1, max);
  std::vector<const Job*> out;
  TakeFrom(ep, worker_id, max, &out);
  if (!out.empty()) return cb(std::move(out));
  if (wait_ms <= 0) return cb({});
  ep.waiters.Add(worker_id, max, clock_->NowMs() + wait_ms, std::move(cb));
}

void JobManager::ReturnUndelivered(const std::string& worker_id,
                                   const std::vector<std::string>& job_ids) {
  for (auto it = job_ids.rbegin(); it != job_ids.rend(); ++it) {
    auto jit = jobs_.find(*it);
    if (jit == jobs_.end()) continue;
    Job* j = jit->second.get();
    if (j->status != JobStatus::kInProgress || j->rec.worker_id != worker_id) continue;
    Release(j);
    j->rec.attempts = std::max(0, j->rec.attempts - 1);
    j->rec.started_ms = 0;
    j->rec.worker_id.clear();
    Enqueue(j, true);
    Persist(j, false);
  }
  for (auto& [id, ep] : endpoints_) Dispatch(ep);
}

void JobManager::DropWaiters(const std::string& worker_id) {
  for (auto& [ep_id, ep] : endpoints_) ep.waiters.Drop(worker_id);
}

Result<DoneOutcome> JobManager::Finish(const std::string& worker_id, const std::string& job_id,
                                       const json::value& body, bool is_stream,
                                       std::function<void(Status)> durable) {
  if (!body.is_object()) return InvalidArgument("job-done body must be a JSON object");
  const auto& obj = body.as_object();
  const json::value* status = Find(obj, "status");
  bool progress = status && status->is_string() && status->get_string() == "IN_PROGRESS";
  // A final answer for a job we asked this worker to stop: the stop is done.
  if (!progress) stops_.Answered(worker_id, job_id);
  auto it = jobs_.find(job_id);
  if (it == jobs_.end()) return NotFound("job not found: " + job_id);
  Job* j = it->second.get();
  DoneOutcome out;
  if (const auto* sp = Find(obj, "stopPod"); sp && sp->is_bool() && sp->get_bool()) {
    out.stop_worker = true;
  }
  bool holder = j->rec.worker_id == worker_id;

  if (progress) {
    // Progress moves only a running job of this worker; a late one is ignored.
    if (j->status == JobStatus::kInProgress && holder) {
      const json::value* o = Find(obj, "output");
      std::string update = o ? ToJson(*o) : "";
      if (update.size() > options_.progress_max_bytes) {
        return PayloadTooLarge("a progress update holds at most " +
                               std::to_string(options_.progress_max_bytes) + " bytes, not " +
                               std::to_string(update.size()));
      }
      j->progress = std::move(update);
      out.accepted = true;
    }
    if (durable) durable(Status::Ok());
    return out;
  }
  // A result counts from the worker holding the job, or from the one that last held it when
  // it has been requeued meanwhile (its lease lapsed but it finished after all).
  bool acceptable =
      holder && (j->status == JobStatus::kInProgress || j->status == JobStatus::kInQueue);
  if (!acceptable) {
    if (IsTerminal(j->status)) {  // a duplicate or a result after cancel/timeout: idempotent
      if (durable) durable(Status::Ok());
      return out;
    }
    return FailedPrecondition("job " + job_id + " is not held by this worker");
  }
  JobStatus final_status = JobStatus::kCompleted;
  std::string output, error;
  const json::value* err = Find(obj, "error");
  if (err && !err->is_null()) {
    final_status = JobStatus::kFailed;
    error = ToJson(*err);
  } else {
    const json::value* o = Find(obj, "output");
    output = o ? ToJson(*o) : "";
    bool empty_list = o && o->is_array() && o->as_array().empty();
    if (is_stream && (output.empty() || empty_list) && !j->stream_all.empty()) {
      // Never replace the chunks already streamed with []: they become the output.
      output = "[";
      for (size_t i = 0; i < j->stream_all.size(); ++i) {
        if (i) output += ',';
        output += j->stream_all[i];
      }
      output += ']';
    }
  }
  out.accepted = true;
  if (Unwritten(*j)) {  // a /runsync job nobody outside this process needs: nothing to write
    Complete(j, worker_id, final_status, std::move(output), std::move(error));
    if (durable) durable(Status::Ok());
    return out;
  }
  WriteResult(j, worker_id, final_status, std::move(output), std::move(error), std::move(durable));
  return out;
}

void JobManager::Complete(Job* j, const std::string& worker_id, JobStatus status,
                          std::string output, std::string error) {
  if (j->status == JobStatus::kInQueue) {
    SetStatus(j, JobStatus::kInProgress);  // leaves the queue; Terminate ends it from here
    leases_.Hold(worker_id, j->rec.id);
  }
  Terminate(j, status, std::move(output), std::move(error));
}

void JobManager::WriteResult(Job* j, const std::string& worker_id, JobStatus status,
                             std::string output, std::string error,
                             std::function<void(Status)> durable) {
  auto still = [worker_id](const Job& job) {
    return job.rec.worker_id == worker_id && !IsTerminal(job.status);
  };
  // The record written copies the result; the change applied later moves it (one copy on this
  // path, as a plain write of the ended job made).
  auto result =
      std::make_shared<std::pair<std::string, std::string>>(std::move(output), std::move(error));
  auto end = [this, worker_id, status, result](Job* job) {
    Complete(job, worker_id, status, std::move(result->first), std::move(result->second));
  };
  EndAfterWrite(j, status, result->first, result->second, std::move(still), std::move(end),
                std::move(durable));
}

store::JobRecord JobManager::RecordWithoutInput(Job* j) {
  std::string input = std::move(j->rec.input);  // an update never writes the input
  store::JobRecord rec = j->rec;
  j->rec.input = std::move(input);
  return rec;
}

void JobManager::EndAfterWrite(Job* j, JobStatus status, const std::string& output,
                               const std::string& error, std::function<bool(const Job&)> still,
                               std::function<void(Job*)> end, std::function<void(Status)> durable) {
  if (!j->stored) Persist(j, false);  // its first write carries its whole record
  store::JobRecord rec = RecordWithoutInput(j);
  rec.status = StatusName(status);
  rec.output = output;
  rec.error = error;
  rec.completed_ms = clock_->NowMs();
  ChangeAfterWrite(j, std::move(rec), std::move(still), std::move(end), std::move(durable));
}

void JobManager::ChangeAfterWrite(Job* j, store::JobRecord rec,
                                  std::function<bool(const Job&)> still,
                                  std::function<void(Job*)> change,
                                  std::function<void(Status)> durable) {
  const uint64_t seen = ++j->writes;
  store_->Write({store::Mutation::UpdateJob(std::move(rec))},
                [this, id = j->rec.id, still = std::move(still), change = std::move(change),
                 durable = std::move(durable), seen](Status s) {
                  auto it = s.ok() ? jobs_.find(id) : jobs_.end();
                  if (it != jobs_.end()) {  // (a deleted job is gone, record and all)
                    Job* job = it->second.get();
                    // What happened to the job meanwhile (it ended, went to another worker)
                    // decides: it came after this write, and so did its own write, if any.
                    const bool applies = still(*job);
                    if (applies) change(job);
                    // The store holds the last write: unless it is this one and applied, the
                    // job as it is now goes after it.
                    if (applies != (job->writes == seen)) Persist(job, false);
                  }
                  if (durable) durable(std::move(s));
                });
}

Status JobManager::AppendStream(const std::string& worker_id, const std::string& job_id,
                                std::string chunk_json) {
  auto it = jobs_.find(job_id);
  if (it == jobs_.end()) return NotFound("job not found: " + job_id);
  Job* j = it->second.get();
  if (j->rec.worker_id != worker_id) return FailedPrecondition("job is not held by this worker");
  if (j->status != JobStatus::kInProgress) return Status::Ok();  // late chunk: ignored
  if (j->stream_cut.empty() && (j->stream_all.size() >= options_.stream_max_chunks ||
                                j->stream_bytes + chunk_json.size() > options_.stream_max_bytes)) {
    j->stream_cut = "the stream was cut after " + std::to_string(j->stream_all.size()) +
                    " chunks (" + std::to_string(j->stream_bytes) +
                    " bytes): a job holds at most " + std::to_string(options_.stream_max_chunks) +
                    " chunks and " + std::to_string(options_.stream_max_bytes) + " bytes";
    GLOG_WARN("jobs: job %s: %s", job_id.c_str(), j->stream_cut.c_str());
  }
  if (!j->stream_cut.empty()) return PayloadTooLarge(j->stream_cut);
  j->stream_bytes += chunk_json.size();
  j->stream_pending.push_back(chunk_json);
  j->stream_all.push_back(std::move(chunk_json));
  stream_waiters_.Notify(job_id, j);
  return Status::Ok();
}

void JobManager::Ping(const std::string& worker_id, const std::vector<std::string>& running,
                      int64_t ping_interval_ms) {
  int64_t now = clock_->NowMs();
  std::unordered_set<std::string> listed(running.begin(), running.end());
  for (const auto& id : HeldBy(worker_id)) {
    Job* j = jobs_[id].get();
    if (listed.count(id)) {
      j->missed_pings = 0;
      continue;
    }
    if (j->rec.started_ms + ping_interval_ms >= now) continue;  // the list may lag the take
    // Two pings in a row: one ping's list may have been read just before the take and have
    // arrived late (a heartbeat process descheduled on a busy host); the next one's cannot.
    if (++j->missed_pings < 2) continue;
    GLOG_WARN("jobs: worker %s no longer lists job %s; requeueing", worker_id.c_str(), id.c_str());
    Requeue(j, "the worker dropped the job");
  }
  stops_.Ping(worker_id, listed);  // a stopped job the worker no longer runs is stopped
}

void JobManager::WorkerLost(const std::string& worker_id, const std::string& why) {
  // Its waiting takes go first, so that requeued jobs are not handed straight back to it.
  DropWaiters(worker_id);
  stops_.WorkerLost(worker_id);
  for (const auto& id : HeldBy(worker_id)) Requeue(jobs_[id].get(), why);
  leases_.Forget(worker_id);
}

void JobManager::PollStops(const std::string& worker_id, int64_t wait_ms,
                           std::function<void(std::vector<std::string>)> cb) {
  stops_.Poll(worker_id, wait_ms, std::move(cb));
}

}  // namespace gantry::jobs
