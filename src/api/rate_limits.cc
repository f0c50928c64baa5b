#include "api/rate_limits.h"

#include <algorithm>
#include <cmath>

namespace gantry::api {

std::optional<RateRule> EndpointRateRule(std::string_view pattern) {
  // RunPod's "Rate Limit" column, per endpoint (Send API requests, Endpoint operations).
  static constexpr struct {
    std::string_view suffix;
    RateRule rule;
  } kRules[] = {
      // ... and its "Concurrent Limit" column.
      {"/run", {1'000, 10'000, 200}},          {"/runsync", {2'000, 10'000, 400}},
      {"/status/{job}", {2'000, 10'000, 400}}, {"/status-sync/{job}", {2'000, 10'000, 400}},
      {"/stream/{job}", {2'000, 10'000, 400}}, {"/cancel/{job}", {100, 10'000, 20}},
      {"/purge-queue", {2, 10'000, 0}},        {"/requests", {10, 10'000, 2}},
  };
  constexpr std::string_view kPrefix = "/v2/{endpoint}";
  if (!pattern.starts_with(kPrefix)) return std::nullopt;
  pattern.remove_prefix(kPrefix.size());
  for (const auto& r : kRules) {
    if (pattern == r.suffix) return r.rule;
  }
  return std::nullopt;
}

int64_t RateLimiter::Scaled(int64_t limit) const {
  return std::max<int64_t>(1,
                           static_cast<int64_t>(std::floor(static_cast<double>(limit) * scale_)));
}

const std::string& RateLimiter::Name(std::string_view kind, std::string_view name) {
  scratch_.assign(kind);
  scratch_ += '\0';
  scratch_ += name;
  return scratch_;
}

bool RateLimiter::Enter(std::string_view kind, std::string_view name, int64_t limit) {
  if (scale_ <= 0 || limit <= 0) return true;
  int64_t& n = in_flight_[Name(kind, name)];
  if (n >= Scaled(limit)) return false;
  ++n;
  return true;
}

void RateLimiter::Leave(std::string_view kind, std::string_view name) {
  auto it = in_flight_.find(Name(kind, name));
  if (it != in_flight_.end() && --it->second <= 0) in_flight_.erase(it);
}

int64_t RateLimiter::Admit(std::string_view kind, std::string_view name, RateRule rule) {
  if (scale_ <= 0) return 0;
  const double capacity = static_cast<double>(Scaled(rule.requests));
  const double per_ms = capacity / static_cast<double>(rule.window_ms);
  const int64_t now = clock_->NowMs();
  if (buckets_.size() > 100'000) {
    // Full buckets are as good as new ones: drop them, so that the map stays bounded.
    std::erase_if(buckets_, [&](const auto& kv) {
      const Bucket& b = kv.second;
      return b.tokens + static_cast<double>(now - b.at_ms) * b.per_ms >= b.capacity;
    });
  }
  auto it = buckets_.find(Name(kind, name));
  if (it == buckets_.end()) it = buckets_.emplace(scratch_, Bucket{capacity, now}).first;
  Bucket& b = it->second;
  b.capacity = capacity;
  b.per_ms = per_ms;
  b.tokens = std::min(capacity, b.tokens + static_cast<double>(now - b.at_ms) * per_ms);
  b.at_ms = now;
  if (b.tokens >= 1) {
    b.tokens -= 1;
    return 0;
  }
  return std::max<int64_t>(1, static_cast<int64_t>(std::ceil((1 - b.tokens) / per_ms)));
}

}  // namespace gantry::api
