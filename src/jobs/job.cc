#include "jobs/job.h"

#include <algorithm>

#include "common/json.h"

namespace gantry::jobs {

const char* StatusName(JobStatus s) {
  switch (s) {
    case JobStatus::kInQueue:
      return "IN_QUEUE";
    case JobStatus::kInProgress:
      return "IN_PROGRESS";
    case JobStatus::kCompleted:
      return "COMPLETED";
    case JobStatus::kFailed:
      return "FAILED";
    case JobStatus::kCancelled:
      return "CANCELLED";
    case JobStatus::kTimedOut:
      return "TIMED_OUT";
  }
  return "UNKNOWN";
}

std::optional<JobStatus> ParseStatus(std::string_view s) {
  for (JobStatus st : {JobStatus::kInQueue, JobStatus::kInProgress, JobStatus::kCompleted,
                       JobStatus::kFailed, JobStatus::kCancelled, JobStatus::kTimedOut}) {
    if (s == StatusName(st)) return st;
  }
  return std::nullopt;
}

JobTimes TimesOf(const Job& job, int64_t now_ms) {
  const auto& r = job.rec;
  int64_t delay = 0, exec = 0;
  if (r.started_ms > 0) {
    delay = r.started_ms - r.created_ms;
    exec = (r.completed_ms > 0 ? r.completed_ms : now_ms) - r.started_ms;
  } else {
    delay = (r.completed_ms > 0 ? r.completed_ms : now_ms) - r.created_ms;
  }
  return {std::max<int64_t>(delay, 0), std::max<int64_t>(exec, 0)};
}

std::string StatusJson(const Job& job, int64_t now_ms) {
  const auto& r = job.rec;
  const JobTimes times = TimesOf(job, now_ms);
  std::string out;
  out.reserve(128 + r.output.size() + r.error.size());
  out += "{\"id\":\"";
  out += r.id;
  out += "\",\"status\":\"";
  out += StatusName(job.status);
  out += "\",\"delayTime\":";
  out += std::to_string(times.delay_ms);
  out += ",\"executionTime\":";
  out += std::to_string(times.execution_ms);
  const std::string& output = job.status == JobStatus::kInProgress ? job.progress : r.output;
  if (!output.empty()) {
    out += ",\"output\":";
    out += output;
  }
  if (!r.error.empty()) {
    out += ",\"error\":";
    out += r.error;
  }
  if (!job.stream_cut.empty()) {  // Gantry's own: the worker streamed past the job's caps
    out += ",\"streamCut\":";
    out += JsonQuote(job.stream_cut);
  }
  if (!r.worker_id.empty()) {
    out += ",\"workerId\":\"";
    out += r.worker_id;
    out += '"';
  }
  if (job.cold_start_wait_ms >= 0) {  // Gantry's own: the job waited for a cold start
    out += ",\"coldStart\":{\"workerId\":\"" + job.cold_start_worker +
           "\",\"waitedMs\":" + std::to_string(job.cold_start_wait_ms) + "}";
  }
  out += '}';
  return out;
}

}  // namespace gantry::jobs
