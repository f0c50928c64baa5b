#pragma once
// Webhooks: delivers a finished job's status object (StatusJson) to the job's webhook URL; when a
// delivery fails, it tries again `retry_ms` after the failure, up to `retries` times (RunPod's
// policy). Each retry sends the job as it is then; a job deleted meanwhile, or left with no
// webhook, gets no more. The timeout of one delivery is the Poster's to apply (main gives it
// JobsOptions::webhook_timeout_ms): a delivery ends when the Poster calls `done`.
//
// Threading: not thread-safe; every call, and every callback, happens on the thread of the
// JobManager that owns it, the Poster's `done` included. Retries are deadlines on the
// DeadlineQueue, so they are sent only from its Tick().

#include <cstdint>
#include <functional>
#include <string>

#include "common/env.h"
#include "jobs/deadline_queue.h"
#include "jobs/job.h"

namespace gantry::jobs {

class Webhooks {
 public:
  // Posts `body` to `url` and calls `done` with whether the target took it (a 2xx answer).
  using Poster =
      std::function<void(const std::string& url, std::string body, std::function<void(bool)>)>;
  // The job with this id, or nullptr when there is none (any more).
  using FindJob = std::function<const Job*(const std::string& job_id)>;

  struct Options {
    int retries = 2;            // Retries after the first delivery fails. Default: 2.
    int64_t retry_ms = 10'000;  // Between a failure and its retry. Default: 10 s.
  };

  // `clock` and `deadlines` must outlive this, and this the `done`s of deliveries still pending.
  Webhooks(const Clock* clock, DeadlineQueue* deadlines, Options options, Poster poster,
           FindJob find_job);
  Webhooks(const Webhooks&) = delete;
  Webhooks& operator=(const Webhooks&) = delete;

  // Delivers the job's status to its webhook, if it has one.
  void Send(const Job& job) {
    if (!job.rec.webhook.empty()) Post(job, 0);
  }

 private:
  void Post(const Job& job, int attempt);  // attempt: 0 first, then 1..retries
  void RetryDue(const DeadlineQueue::Due& d);

  const Clock* clock_;
  DeadlineQueue* deadlines_;
  Options options_;
  Poster poster_;
  FindJob find_job_;
  DeadlineQueue::Kind retry_kind_;  // key: job id; tag: the attempt it sends
};

}  // namespace gantry::jobs
