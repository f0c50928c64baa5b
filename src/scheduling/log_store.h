#pragma once
// Worker logs shipped by agents, with a retention limit: the newest `capacity` lines are kept,
// in memory for queries and in the store (when given) so that they survive a restart. Each
// endpoint keeps at most `per_endpoint` of them: a noisy endpoint drops its own oldest lines,
// never another endpoint's.
// Loop thread only.

#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "common/status.h"
#include "store/store.h"

namespace gantry::scheduling {

// A line; `seq` increases, and clients resume after the last seq they saw.
using LogEntry = store::LogRecord;

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
  // `store` may be null (memory only). Default capacity: 100 000 lines, 25 000 per endpoint.
  explicit LogStore(store::Store* store = nullptr, size_t capacity = 100'000,
                    size_t per_endpoint = 25'000)
      : store_(store), capacity_(capacity), per_endpoint_(per_endpoint) {}
  // Restores the newest lines from the store.
  Status Load();
  // Appends lines (one store write for the batch); each gets the next seq.
  void Append(std::vector<LogEntry> lines);
  void Append(LogEntry line) { Append(std::vector<LogEntry>{std::move(line)}); }
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
  // Keeps `e`, dropping its endpoint's oldest line past per_endpoint_ and the oldest line of
  // all past capacity_.
  void Keep(LogEntry e);

  store::Store* store_;
  size_t capacity_;
  size_t per_endpoint_;
  int64_t next_seq_ = 1;
  std::map<std::string, std::deque<LogEntry>> entries_;  // by endpoint, oldest first
  size_t total_ = 0;
  std::vector<Waiter> waiters_;
};

}  // namespace gantry::scheduling
