#include "jobs/webhooks.h"

#include "common/log.h"

namespace gantry::jobs {

Webhooks::Webhooks(const Clock* clock, DeadlineQueue* deadlines, Options options, Poster poster,
                   FindJob find_job)
    : clock_(clock),
      deadlines_(deadlines),
      options_(options),
      poster_(std::move(poster)),
      find_job_(std::move(find_job)),
      retry_kind_(deadlines->AddKind([this](const DeadlineQueue::Due& d) { RetryDue(d); })) {}

void Webhooks::Post(const Job& job, int attempt) {
  if (job.rec.webhook.empty()) return;
  poster_(job.rec.webhook, StatusJson(job, clock_->NowMs()),
          [this, job_id = job.rec.id, attempt](bool ok) {
            if (ok) return;
            if (attempt < options_.retries) {
              deadlines_->At(clock_->NowMs() + options_.retry_ms, retry_kind_, job_id,
                             static_cast<uint64_t>(attempt + 1));
            } else {
              GLOG_WARN("jobs: webhook for job %s failed after %d attempts", job_id.c_str(),
                        attempt + 1);
            }
          });
}

void Webhooks::RetryDue(const DeadlineQueue::Due& d) {
  if (const Job* job = find_job_(d.key)) Post(*job, static_cast<int>(d.tag));
}

}  // namespace gantry::jobs
