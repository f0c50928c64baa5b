#include "scheduling/log_store.h"

#include <algorithm>

namespace gantry::scheduling {

static bool Matches(const LogQuery& q, const LogEntry& e) {
  return e.seq > q.after_seq && (q.endpoint_id.empty() || q.endpoint_id == e.endpoint_id) &&
         (q.worker_id.empty() || q.worker_id == e.worker_id) &&
         (q.from_ms == 0 || e.at_ms >= q.from_ms) && (q.to_ms == 0 || e.at_ms <= q.to_ms);
}

Status LogStore::Load() {
  if (!store_) return Status::Ok();
  auto lines = store_->LoadLogs(capacity_);
  if (!lines.ok()) return lines.status();
  for (auto& l : *lines) {
    next_seq_ = std::max(next_seq_, l.seq + 1);
    entries_.push_back(std::move(l));
  }
  return Status::Ok();
}

void LogStore::Append(std::vector<LogEntry> lines) {
  std::vector<store::Mutation> m;
  const size_t added = lines.size();
  for (auto& e : lines) {
    e.seq = next_seq_++;
    if (store_) {
      m.push_back(store::Mutation::AppendLog(e));
      // Every 1 000 lines, drop the stored ones past the retention limit.
      if (e.seq % 1000 == 0 && e.seq > static_cast<int64_t>(capacity_)) {
        m.push_back(store::Mutation::TrimLogs(e.seq - static_cast<int64_t>(capacity_)));
      }
    }
    entries_.push_back(std::move(e));
  }
  if (store_ && !m.empty()) store_->Write(std::move(m), {});
  while (entries_.size() > capacity_) entries_.pop_front();
  std::vector<Waiter> keep;
  std::vector<std::pair<std::function<void(std::vector<LogEntry>)>, LogQuery>> ready;
  for (auto& w : waiters_) {
    bool match = false;  // among the lines just added
    size_t n = 0;
    for (auto it = entries_.rbegin(); it != entries_.rend() && n < added && !match; ++it, ++n) {
      match = Matches(w.q, *it);
    }
    if (match)
      ready.emplace_back(std::move(w.cb), w.q);
    else
      keep.push_back(std::move(w));
  }
  waiters_ = std::move(keep);
  for (auto& [cb, q] : ready) cb(Query(q));
}

std::vector<LogEntry> LogStore::Query(const LogQuery& q) const {
  std::vector<LogEntry> out;
  for (const auto& e : entries_) {
    if (!Matches(q, e)) continue;
    out.push_back(e);
    if (out.size() >= q.limit) break;
  }
  return out;
}

void LogStore::Wait(LogQuery q, int64_t deadline_ms,
                    std::function<void(std::vector<LogEntry>)> cb) {
  auto now = Query(q);
  if (!now.empty()) return cb(std::move(now));
  waiters_.push_back({std::move(q), deadline_ms, std::move(cb)});
}

void LogStore::Expire(int64_t now_ms) {
  std::vector<Waiter> keep;
  std::vector<std::function<void(std::vector<LogEntry>)>> due;
  for (auto& w : waiters_) {
    if (w.deadline_ms <= now_ms)
      due.push_back(std::move(w.cb));
    else
      keep.push_back(std::move(w));
  }
  waiters_ = std::move(keep);
  for (auto& cb : due) cb({});
}

std::vector<std::string> LogStore::Tail(const std::string& worker_id, size_t n) const {
  std::vector<std::string> out;
  for (auto it = entries_.rbegin(); it != entries_.rend() && out.size() < n; ++it) {
    if (it->worker_id == worker_id) out.push_back(it->text);
  }
  return {out.rbegin(), out.rend()};
}

}  // namespace gantry::scheduling
