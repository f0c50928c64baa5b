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
    Keep(std::move(l));
  }
  return Status::Ok();
}

void LogStore::Keep(LogEntry e) {
  auto& mine = entries_[e.endpoint_id];
  mine.push_back(std::move(e));
  ++total_;
  if (mine.size() > per_endpoint_) {
    mine.pop_front();
    --total_;
  }
  while (total_ > capacity_) {
    auto oldest = entries_.end();
    for (auto it = entries_.begin(); it != entries_.end(); ++it) {
      if (!it->second.empty() &&
          (oldest == entries_.end() || it->second.front().seq < oldest->second.front().seq)) {
        oldest = it;
      }
    }
    oldest->second.pop_front();
    --total_;
    if (oldest->second.empty()) entries_.erase(oldest);
  }
}

void LogStore::Append(std::vector<LogEntry> lines) {
  std::vector<store::Mutation> m;
  for (auto& e : lines) {
    e.seq = next_seq_++;
    if (store_) {
      m.push_back(store::Mutation::AppendLog(e));
      // Every 1 000 lines, drop the stored ones past the retention limit.
      if (e.seq % 1000 == 0 && e.seq > static_cast<int64_t>(capacity_)) {
        m.push_back(store::Mutation::TrimLogs(e.seq - static_cast<int64_t>(capacity_)));
      }
    }
  }
  if (store_ && !m.empty()) store_->Write(std::move(m), {});
  std::vector<Waiter> keep;
  std::vector<std::pair<std::function<void(std::vector<LogEntry>)>, LogQuery>> ready;
  for (auto& w : waiters_) {
    // Among the lines just added.
    const bool match =
        std::any_of(lines.begin(), lines.end(), [&](const LogEntry& e) { return Matches(w.q, e); });
    if (match)
      ready.emplace_back(std::move(w.cb), w.q);
    else
      keep.push_back(std::move(w));
  }
  for (auto& e : lines) Keep(std::move(e));
  waiters_ = std::move(keep);
  for (auto& [cb, q] : ready) cb(Query(q));
}

std::vector<LogEntry> LogStore::Query(const LogQuery& q) const {
  // The first `limit` matches of each endpoint's lines hold the first `limit` of all of them.
  std::vector<LogEntry> out;
  auto scan = [&](const std::deque<LogEntry>& lines) {
    size_t n = 0;
    for (const auto& e : lines) {
      if (!Matches(q, e)) continue;
      out.push_back(e);
      if (++n >= q.limit) break;
    }
  };
  if (!q.endpoint_id.empty()) {
    if (auto it = entries_.find(q.endpoint_id); it != entries_.end()) scan(it->second);
    return out;
  }
  for (const auto& [endpoint, lines] : entries_) scan(lines);
  std::sort(out.begin(), out.end(),
            [](const LogEntry& a, const LogEntry& b) { return a.seq < b.seq; });
  if (out.size() > q.limit) out.resize(q.limit);
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
  std::vector<const LogEntry*> last;  // the worker's last n lines of each endpoint
  for (const auto& [endpoint, lines] : entries_) {
    size_t found = 0;
    for (auto it = lines.rbegin(); it != lines.rend() && found < n; ++it) {
      if (it->worker_id == worker_id) {
        last.push_back(&*it);
        ++found;
      }
    }
  }
  std::sort(last.begin(), last.end(),
            [](const LogEntry* a, const LogEntry* b) { return a->seq < b->seq; });
  if (last.size() > n) last.erase(last.begin(), last.end() - static_cast<std::ptrdiff_t>(n));
  std::vector<std::string> out;
  for (const LogEntry* e : last) out.push_back(e->text);
  return out;
}

}  // namespace gantry::scheduling
