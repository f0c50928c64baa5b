#pragma once
// Leases: which jobs each worker holds (the jobs IN_PROGRESS on it, DESIGN §3: one worker holds
// a job at a time), and when each worker last let go of one, which is how long it has been idle
// (the autoscaler's scale-down clock).
//
// The JobManager keeps it: Hold when a job starts on a worker (or a lapsed lease's late result
// is accepted), Release when the job leaves the worker, Forget when the worker is gone.
//
// Threading: not thread-safe; every call happens on the thread of the JobManager that owns it.

#include <cstdint>
#include <set>
#include <string>
#include <unordered_map>
#include <vector>

namespace gantry::jobs {

class Leases {
 public:
  void Hold(const std::string& worker_id, const std::string& job_id) {
    held_[worker_id].insert(job_id);
  }
  // The worker lets go of the job at `now_ms`. Counts as the worker's last activity even when it
  // no longer held the job.
  void Release(const std::string& worker_id, const std::string& job_id, int64_t now_ms);
  // Forgets when the worker was last active (it is gone).
  void Forget(const std::string& worker_id) { last_release_ms_.erase(worker_id); }

  // The jobs the worker holds, in id order, and how many (without copying them).
  std::vector<std::string> HeldBy(const std::string& worker_id) const;
  size_t HeldCount(const std::string& worker_id) const;
  // When the worker last let go of a job (0: never); -1 while it holds one.
  int64_t IdleSince(const std::string& worker_id) const;

 private:
  std::unordered_map<std::string, std::set<std::string>> held_;  // worker -> job ids
  std::unordered_map<std::string, int64_t> last_release_ms_;     // worker -> ms
};

}  // namespace gantry::jobs
