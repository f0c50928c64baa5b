#pragma once
// DeadlineQueue: the jobs module's deadlines (long-poll waits, execution timeouts, TTL,
// retention, stop grace, webhook retries), each fired by the one callback of its kind.
//
// A deadline is (due time in ms, kind, key, tag). Each kind is registered once with its
// callback (AddKind). Key and tag say what a deadline is for (a job, endpoint or worker id; a
// waiter id, a start time, an attempt) and are handed back to the callback, which checks that
// the deadline still applies. Deadlines fire only from Tick(), which reads the injected Clock:
// those due by then fire in order of due time, then of arming. A callback may arm and cancel
// deadlines; one it arms that is due already fires in the same Tick().
//
// Cancelling: an owner that must be able to drop its deadline before it fires (a job's TTL, a
// long-poll's wait) arms it with a Deadline handle. The handle cancels its deadline when it is
// cancelled, re-armed, assigned to or destroyed; it follows its owner when moved; and the queue
// empties it just before its deadline fires. A deadline armed without a handle always fires.
//
// Threading: not thread-safe; every call, and every callback, happens on the owner's thread
// (the JobManager's). The queue may be destroyed before or after the handles it filled.

#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "common/env.h"

namespace gantry::jobs {

class Deadline;

// One armed deadline, as the queue keeps it.
struct DeadlineEntry {
  int kind;
  uint64_t tag;
  std::string key;
  Deadline* handle;  // the handle holding it; nullptr: none
};
using DeadlineMap = std::multimap<int64_t, DeadlineEntry>;  // by due time (ms)

class DeadlineQueue;

// A handle to at most one armed deadline. Movable, not copyable. Empty once its deadline fired
// or was cancelled.
class Deadline {
 public:
  Deadline() = default;
  Deadline(Deadline&& other) noexcept { TakeOver(other); }
  Deadline& operator=(Deadline&& other) noexcept {
    if (this != &other) {
      Cancel();
      TakeOver(other);
    }
    return *this;
  }
  Deadline(const Deadline&) = delete;
  Deadline& operator=(const Deadline&) = delete;
  ~Deadline() { Cancel(); }

  void Cancel();  // no-op when empty
  bool armed() const { return queue_ != nullptr; }

 private:
  friend class DeadlineQueue;
  void TakeOver(Deadline& other) {
    queue_ = other.queue_;
    it_ = other.it_;
    if (queue_) it_->second.handle = this;
    other.queue_ = nullptr;
  }

  DeadlineQueue* queue_ = nullptr;  // nullptr: empty
  DeadlineMap::iterator it_;
};

class DeadlineQueue {
 public:
  using Kind = int;
  // What a due deadline's callback is given.
  struct Due {
    int64_t when_ms;  // when it was due (not when it fired)
    std::string key;
    uint64_t tag;
  };
  using Callback = std::function<void(const Due& due)>;

  explicit DeadlineQueue(const Clock* clock) : clock_(clock) {}
  ~DeadlineQueue();
  DeadlineQueue(const DeadlineQueue&) = delete;
  DeadlineQueue& operator=(const DeadlineQueue&) = delete;

  // Registers a kind of deadline and the callback that its due deadlines are given to.
  Kind AddKind(Callback cb);
  // Arms a deadline of `kind` due at `when_ms`. With `handle`, the deadline it held (if any) is
  // cancelled and it holds this one.
  void At(int64_t when_ms, Kind kind, std::string key, uint64_t tag, Deadline* handle = nullptr);
  // Fires every deadline due by the Clock's now.
  void Tick();

  size_t size() const { return deadlines_.size(); }

 private:
  friend class Deadline;

  const Clock* clock_;
  DeadlineMap deadlines_;
  std::vector<Callback> callbacks_;  // by kind
};

inline void Deadline::Cancel() {
  if (!queue_) return;
  queue_->deadlines_.erase(it_);
  queue_ = nullptr;
}

}  // namespace gantry::jobs
