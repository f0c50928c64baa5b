#include "jobs/leases.h"

namespace gantry::jobs {

void Leases::Release(const std::string& worker_id, const std::string& job_id, int64_t now_ms) {
  last_release_ms_[worker_id] = now_ms;
  auto it = held_.find(worker_id);
  if (it == held_.end()) return;
  it->second.erase(job_id);
  if (it->second.empty()) held_.erase(it);
}

std::vector<std::string> Leases::HeldBy(const std::string& worker_id) const {
  auto it = held_.find(worker_id);
  if (it == held_.end()) return {};
  return {it->second.begin(), it->second.end()};
}

size_t Leases::HeldCount(const std::string& worker_id) const {
  auto it = held_.find(worker_id);
  return it == held_.end() ? 0 : it->second.size();
}

int64_t Leases::IdleSince(const std::string& worker_id) const {
  if (held_.count(worker_id)) return -1;
  auto it = last_release_ms_.find(worker_id);
  return it == last_release_ms_.end() ? 0 : it->second;
}

}  // namespace gantry::jobs
