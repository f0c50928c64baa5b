#include "jobs/job_waiters.h"

#include <algorithm>

namespace gantry::jobs {

JobWaiters::JobWaiters(DeadlineQueue* deadlines, FindJob find_job)
    : deadlines_(deadlines),
      find_job_(std::move(find_job)),
      wait_kind_(deadlines->AddKind([this](const DeadlineQueue::Due& d) { WaitDue(d); })) {}

void JobWaiters::Add(const std::string& job_id, int64_t until_ms, Callback cb) {
  const uint64_t id = next_waiter_id_++;
  Waiter& w = waiters_[job_id].emplace_back(Waiter{id, std::move(cb), Deadline()});
  deadlines_->At(until_ms, wait_kind_, job_id, id, &w.timer);
}

void JobWaiters::Notify(const std::string& job_id, const Job* job) {
  auto it = waiters_.find(job_id);
  if (it == waiters_.end()) return;
  std::vector<Waiter> ws = std::move(it->second);
  waiters_.erase(it);
  for (Waiter& w : ws) {
    w.timer.Cancel();
    w.cb(job);
  }
}

void JobWaiters::WaitDue(const DeadlineQueue::Due& d) {
  auto it = waiters_.find(d.key);
  if (it == waiters_.end()) return;
  std::vector<Waiter>& ws = it->second;
  auto w = std::find_if(ws.begin(), ws.end(), [&](const Waiter& x) { return x.id == d.tag; });
  if (w == ws.end()) return;
  Callback cb = std::move(w->cb);
  ws.erase(w);
  if (ws.empty()) waiters_.erase(it);
  cb(find_job_(d.key));
}

}  // namespace gantry::jobs
