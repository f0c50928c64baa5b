#pragma once
// The job state machine (DESIGN §3):
//   IN_QUEUE -> IN_PROGRESS -> COMPLETED | FAILED | CANCELLED | TIMED_OUT
//   IN_PROGRESS -> IN_QUEUE  when its worker is lost or drops it and attempts remain
//   FAILED | TIMED_OUT -> IN_QUEUE  by retry
//   IN_QUEUE -> CANCELLED by cancel

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "jobs/deadline_queue.h"
#include "store/store.h"

namespace gantry::jobs {

enum class JobStatus { kInQueue, kInProgress, kCompleted, kFailed, kCancelled, kTimedOut };

const char* StatusName(JobStatus s);
std::optional<JobStatus> ParseStatus(std::string_view s);
inline bool IsTerminal(JobStatus s) {
  return s != JobStatus::kInQueue && s != JobStatus::kInProgress;
}

// A job as the JobManager holds it. The persistent part is `rec`; the rest lives in memory.
struct Job {
  store::JobRecord rec;
  JobStatus status = JobStatus::kInQueue;
  uint64_t queue_gen = 0;  // bumped whenever the job enters or leaves the queue
  bool deleted = false;    // removed from the manager; queue entries may still point here
  bool stored = true;      // its record has been written (a /runsync job's may not be yet)
  uint64_t writes = 0;     // writes of its record queued so far (to see a later one)
  // A /run job whose first write is not durable yet: not counted, queued or offered until it
  // is, and forgotten if that write fails.
  bool committing = false;
  std::string progress;  // latest progress update (raw JSON), shown while running
  std::vector<std::string> stream_pending;  // chunks not yet drained by /stream
  std::vector<std::string> stream_all;      // every chunk, for the final output
  size_t stream_bytes = 0;                  // the size of stream_all's chunks
  // Set once the worker streamed past JobsOptions' caps: what was cut (later chunks are
  // refused with 413); shown in the job's status as "streamCut".
  std::string stream_cut;
  // Set when the job waited for its worker's cold start: how long, from submission to the
  // worker being ready (ms), and which worker.
  int64_t cold_start_wait_ms = -1;
  std::string cold_start_worker;
  // Its own deadlines, cancelled as soon as they no longer apply instead of piling up until they
  // fire: the TTL while not finished, the execution timeout while IN_PROGRESS.
  Deadline ttl_timer;
  Deadline exec_timer;
  // Pings in a row, since it started, of its worker that did not list it (JobManager::Ping).
  int missed_pings = 0;
};

// RunPod's delayTime and executionTime of a job at `now_ms` (ms, never negative): the wait
// from submission to its start (to its end, or now, if it never started), and its run so far.
struct JobTimes {
  int64_t delay_ms = 0;
  int64_t execution_ms = 0;
};
JobTimes TimesOf(const Job& job, int64_t now_ms);

// The client-facing status object of a job (runpod-protocol.md §1), as JSON text.
std::string StatusJson(const Job& job, int64_t now_ms);

// Per-endpoint settings the jobs module needs.
struct QueueConfig {
  int64_t execution_timeout_ms = 600'000;  // Default: 600 s (RunPod's executionTimeoutMs).
  int max_attempts = 3;                    // Default: 3.
  size_t max_queue = 250'000;              // Queued jobs above this get 429. Default: 250 000.
  // The inputs of its queued jobs, together, at most (a job past it gets 429): what one
  // endpoint's callers can make the server hold before any worker takes it. Default: 1 GiB.
  size_t max_queued_bytes = size_t{1} << 30;
  bool aggregate_stream = false;  // Keep streamed chunks as the final output.
};

// Limits of the per-request policy (runpod-protocol.md §1).
constexpr int64_t kMinExecutionTimeoutMs = 5'000;
constexpr int64_t kMaxPolicyMs = 7LL * 24 * 3600 * 1000;
constexpr int64_t kMinTtlMs = 10'000;
constexpr int64_t kDefaultTtlMs = 24LL * 3600 * 1000;

}  // namespace gantry::jobs
