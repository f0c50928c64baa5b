#pragma once
// Worker logs shipped by agents, kept in memory with a retention limit (the newest `capacity`
// lines). Loop thread only.

#include <cstdint>
#include <deque>
#include <functional>
#include <string>
#include <vector>

namespace gantry::scheduling {

struct LogEntry {
  int64_t seq = 0;  // increasing; clients resume after the last seq they saw
  int64_t at_ms = 0;
  std::string endpoint_id;
  std::string worker_id;
  bool stderr_stream = false;
  std::string text;
};

struct LogQuery {
  std::string endpoint_id;  // "" for all
  std::string worker_id;    // "" for all
  int64_t after_seq = 0;
  int64_t from_ms = 0;  // only lines logged in [from_ms, to_ms]; 0: unbounded
  int64_t to_ms = 0;
  size_t limit = 1000;
};

class LogStore {
 public:
  explicit LogStore(size_t capacity = 100'000) : capacity_(capacity) {}
  void Append(LogEntry e);
  std::vector<LogEntry> Query(const LogQuery& q) const;
  // Calls `cb` once an entry matching `q` arrives, or with nothing after `wait_ms` (the server
  // ticks Expire). For `gantry logs -f`.
  void Wait(LogQuery q, int64_t deadline_ms, std::function<void(std::vector<LogEntry>)> cb);
  void Expire(int64_t now_ms);
  // The last `n` lines of one worker.
  std::vector<std::string> Tail(const std::string& worker_id, size_t n) const;

 private:
  struct Waiter {
    LogQuery q;
    int64_t deadline_ms;
    std::function<void(std::vector<LogEntry>)> cb;
  };
  size_t capacity_;
  int64_t next_seq_ = 1;
  std::deque<LogEntry> entries_;
  std::vector<Waiter> waiters_;
};

}  // namespace gantry::scheduling
