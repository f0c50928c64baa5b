#include "jobs/deadline_queue.h"

namespace gantry::jobs {

DeadlineQueue::~DeadlineQueue() {
  for (auto& [when, d] : deadlines_) {
    if (d.handle) d.handle->queue_ = nullptr;
  }
}

DeadlineQueue::Kind DeadlineQueue::AddKind(Callback cb) {
  callbacks_.push_back(std::move(cb));
  return static_cast<Kind>(callbacks_.size() - 1);
}

void DeadlineQueue::At(int64_t when_ms, Kind kind, std::string key, uint64_t tag,
                       Deadline* handle) {
  auto it = deadlines_.emplace(when_ms, DeadlineEntry{kind, tag, std::move(key), handle});
  if (!handle) return;
  handle->Cancel();
  handle->queue_ = this;
  handle->it_ = it;
}

void DeadlineQueue::Tick() {
  const int64_t now = clock_->NowMs();
  while (!deadlines_.empty() && deadlines_.begin()->first <= now) {
    auto it = deadlines_.begin();
    DeadlineEntry& d = it->second;
    if (d.handle) d.handle->queue_ = nullptr;
    Due due{it->first, std::move(d.key), d.tag};
    const Kind kind = d.kind;
    deadlines_.erase(it);
    callbacks_[kind](due);
  }
}

}  // namespace gantry::jobs
