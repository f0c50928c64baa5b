#pragma once
// JobIndex: each endpoint's jobs in submission order, for listings a page at a time, newest
// first (GET /v2/{endpoint}/requests; later the management job list). Owned by the JobManager,
// which adds a job when it is submitted or loaded and removes it when it is deleted; it holds
// pointers to the manager's jobs, never ownership.
//
// Threading: not thread-safe; the JobManager's thread.

#include <cstddef>
#include <cstdint>
#include <map>
#include <string>
#include <unordered_map>
#include <vector>

#include "jobs/job.h"

namespace gantry::jobs {

// A page of a listing; `next` is the cursor of the page after it, 0 when there is none.
struct JobPage {
  std::vector<const Job*> jobs;
  int64_t next = 0;
};

class JobIndex {
 public:
  // By the job's rec.endpoint_id and rec.seq (unique per job).
  void Add(const Job* job);
  void Remove(const Job* job);
  // Up to `limit` jobs of `endpoint_id`, newest first, submitted before the job whose seq is
  // `before` (0: from the newest). Its `next` is the seq to pass as `before` for the page after
  // it.
  JobPage Recent(const std::string& endpoint_id, size_t limit, int64_t before) const;
  size_t size(const std::string& endpoint_id) const;

 private:
  std::unordered_map<std::string, std::map<int64_t, const Job*>> by_endpoint_;  // seq -> job
};

}  // namespace gantry::jobs
