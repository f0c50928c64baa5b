#include "jobs/take_waiters.h"

#include <algorithm>

namespace gantry::jobs {

void TakeWaiters::Add(std::string worker_id, int max, int64_t until_ms, Callback cb) {
  const uint64_t id = next_waiter_id_++;
  Waiter& w = waiters_.emplace_back(Waiter{id, std::move(worker_id), max, std::move(cb), {}});
  deadlines_->At(until_ms, wait_kind_, endpoint_id_, id, &w.timer);
}

TakeWaiters::Waiter TakeWaiters::PopFront() {
  Waiter w = std::move(waiters_.front());
  waiters_.pop_front();
  w.timer.Cancel();
  return w;
}

void TakeWaiters::Expire(uint64_t id) {
  auto w = std::find_if(waiters_.begin(), waiters_.end(), [&](auto& x) { return x.id == id; });
  if (w == waiters_.end()) return;
  Callback cb = std::move(w->cb);
  waiters_.erase(w);
  cb({});
}

void TakeWaiters::Drop(const std::string& worker_id) {
  if (waiters_.empty()) return;
  std::deque<Waiter> keep;
  std::vector<Callback> gone;
  for (Waiter& w : waiters_) {
    if (w.worker_id == worker_id) {
      w.timer.Cancel();
      gone.push_back(std::move(w.cb));
    } else {
      keep.push_back(std::move(w));
    }
  }
  waiters_ = std::move(keep);
  for (Callback& cb : gone) cb({});
}

void TakeWaiters::DropAll() {
  std::deque<Waiter> all = std::move(waiters_);
  waiters_.clear();
  for (Waiter& w : all) {
    w.timer.Cancel();
    w.cb({});
  }
}

}  // namespace gantry::jobs
