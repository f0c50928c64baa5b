#include "jobs/job_index.h"

namespace gantry::jobs {

void JobIndex::Add(const Job* job) { by_endpoint_[job->rec.endpoint_id][job->rec.seq] = job; }

void JobIndex::Remove(const Job* job) {
  auto it = by_endpoint_.find(job->rec.endpoint_id);
  if (it == by_endpoint_.end()) return;
  it->second.erase(job->rec.seq);
  if (it->second.empty()) by_endpoint_.erase(it);
}

JobPage JobIndex::Recent(const std::string& endpoint_id, size_t limit, int64_t before) const {
  JobPage page;
  auto it = by_endpoint_.find(endpoint_id);
  if (it == by_endpoint_.end() || limit == 0) return page;
  const std::map<int64_t, const Job*>& jobs = it->second;
  // The first job at or after `before` ends the page: walk back from it.
  auto end = before > 0 ? jobs.lower_bound(before) : jobs.end();
  auto rit = std::make_reverse_iterator(end);
  for (; rit != jobs.rend() && page.jobs.size() < limit; ++rit) page.jobs.push_back(rit->second);
  if (rit != jobs.rend() && !page.jobs.empty()) page.next = page.jobs.back()->rec.seq;
  return page;
}

size_t JobIndex::size(const std::string& endpoint_id) const {
  auto it = by_endpoint_.find(endpoint_id);
  return it == by_endpoint_.end() ? 0 : it->second.size();
}

}  // namespace gantry::jobs
