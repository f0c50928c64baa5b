#include "jobs/stops.h"

namespace gantry::jobs {

Stops::Stops(const Clock* clock, DeadlineQueue* deadlines, Options options, KillWorker kill)
    : clock_(clock),
      deadlines_(deadlines),
      options_(options),
      kill_(std::move(kill)),
      wait_kind_(deadlines->AddKind([this](const DeadlineQueue::Due& d) { WaitDue(d); })),
      reoffer_kind_(deadlines->AddKind([this](const DeadlineQueue::Due& d) { Offer(d.key); })),
      grace_kind_(deadlines->AddKind([this](const DeadlineQueue::Due& d) { GraceDue(d); })) {}

void Stops::Request(const std::string& job_id, const std::string& worker_id) {
  if (worker_id.empty()) return;
  const int64_t now = clock_->NowMs();
  stops_[job_id] = Stop{worker_id, now, 0};
  deadlines_->At(now + options_.grace_ms, grace_kind_, job_id, static_cast<uint64_t>(now));
  Offer(worker_id);
}

void Stops::Clear(const std::string& job_id) { stops_.erase(job_id); }

void Stops::Answered(const std::string& worker_id, const std::string& job_id) {
  auto it = stops_.find(job_id);
  if (it != stops_.end() && it->second.worker_id == worker_id) stops_.erase(it);
}

void Stops::Ping(const std::string& worker_id, const std::unordered_set<std::string>& running) {
  std::erase_if(stops_, [&](const auto& s) {
    const auto& [job_id, stop] = s;
    return stop.worker_id == worker_id && !running.count(job_id) && stop.offered_ms > 0;
  });
}

void Stops::WorkerLost(const std::string& worker_id) {
  EndWait(worker_id);
  std::erase_if(stops_, [&](const auto& s) { return s.second.worker_id == worker_id; });
}

void Stops::Poll(const std::string& worker_id, int64_t wait_ms, PollCallback cb) {
  const int64_t now = clock_->NowMs();
  std::vector<std::string> ids = Due(worker_id, now);
  if (!ids.empty() || wait_ms <= 0) {
    for (const std::string& id : ids) stops_[id].offered_ms = now;
    return cb(std::move(ids));
  }
  EndWait(worker_id);  // a newer poll replaces an older one
  Waiter& w = waiters_[worker_id];
  w.id = next_waiter_id_++;
  w.cb = std::move(cb);
  deadlines_->At(now + wait_ms, wait_kind_, worker_id, w.id, &w.timer);
  // Re-offers of stops already offered come due before the wait ends.
  for (const auto& [job_id, stop] : stops_) {
    if (stop.worker_id == worker_id) {
      deadlines_->At(stop.offered_ms + options_.reoffer_ms, reoffer_kind_, worker_id, 0);
    }
  }
}

std::vector<std::string> Stops::Due(const std::string& worker_id, int64_t now) {
  std::vector<std::string> ids;
  for (const auto& [job_id, stop] : stops_) {
    if (stop.worker_id != worker_id) continue;
    if (stop.offered_ms == 0 || stop.offered_ms + options_.reoffer_ms <= now) {
      ids.push_back(job_id);
    }
  }
  return ids;
}

void Stops::Offer(const std::string& worker_id) {
  auto w = waiters_.find(worker_id);
  if (w == waiters_.end()) return;
  const int64_t now = clock_->NowMs();
  std::vector<std::string> ids = Due(worker_id, now);
  if (ids.empty()) return;
  for (const std::string& id : ids) stops_[id].offered_ms = now;
  PollCallback cb = std::move(w->second.cb);
  waiters_.erase(w);  // and its wait's deadline with it
  cb(std::move(ids));
}

void Stops::EndWait(const std::string& worker_id) {
  auto w = waiters_.find(worker_id);
  if (w == waiters_.end()) return;
  PollCallback cb = std::move(w->second.cb);
  waiters_.erase(w);
  cb({});
}

void Stops::WaitDue(const DeadlineQueue::Due& d) {
  auto w = waiters_.find(d.key);
  if (w == waiters_.end() || w->second.id != d.tag) return;
  PollCallback cb = std::move(w->second.cb);
  waiters_.erase(w);
  cb({});
}

void Stops::GraceDue(const DeadlineQueue::Due& d) {
  auto it = stops_.find(d.key);
  if (it == stops_.end() || static_cast<uint64_t>(it->second.requested_ms) != d.tag) return;
  std::string worker_id = std::move(it->second.worker_id);
  stops_.erase(it);
  kill_(worker_id,
        "did not stop job " + d.key + " within " + std::to_string(options_.grace_ms) + " ms");
}

}  // namespace gantry::jobs
