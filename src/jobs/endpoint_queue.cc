#include "jobs/endpoint_queue.h"

namespace gantry::jobs {

Job* EndpointQueue::Pop() {
  while (!entries_.empty()) {
    auto [job, gen] = std::move(entries_.front());
    entries_.pop_front();
    if (Live(*job, gen)) return job.get();
  }
  return nullptr;
}

std::vector<std::string> EndpointQueue::QueuedIds() const {
  std::vector<std::string> ids;
  for (const auto& [job, gen] : entries_) {
    if (Live(*job, gen)) ids.push_back(job->rec.id);
  }
  return ids;
}

int64_t EndpointQueue::OldestNormalCreatedMs() const {
  for (const auto& [job, gen] : entries_) {
    if (Live(*job, gen) && !job->rec.low_priority) return job->rec.created_ms;
  }
  return 0;
}

}  // namespace gantry::jobs
