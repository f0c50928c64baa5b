#pragma once
// Rate limits: how many requests a key, and an endpoint's client routes, may make in a window,
// as token buckets (a burst of `requests` at most, refilled evenly over `window_ms`). Past it,
// the API answers 429 with Retry-After (api.cc). The endpoint limits are RunPod's documented
// ones (docs/runpod-protocol.md), per endpoint and operation; each key may make kKeyRequests
// per kKeyWindowMs over every route. `scale` multiplies every limit (0: none), for a server
// that must take more (gantry server --rate-limit-scale).
//
// Threading: not thread-safe; the server's loop. Time from the injected Clock.

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>

#include "common/env.h"

namespace gantry::api {

struct RateRule {
  int64_t requests = 0;  // per window
  int64_t window_ms = 10'000;
  int64_t concurrent = 0;  // requests being answered at once at most; 0: no limit
};

// RunPod's limit of an endpoint's client route, by its pattern ("/v2/{endpoint}/run"); nullopt
// for a route it does not limit.
std::optional<RateRule> EndpointRateRule(std::string_view pattern);
inline constexpr RateRule kKeyRule{10'000, 10'000};

class RateLimiter {
 public:
  RateLimiter(const Clock* clock, double scale) : clock_(clock), scale_(scale) {}

  // Takes one request from the tokens of the bucket named by `kind` and `name` under `rule`: 0
  // when there was one, else how many ms until there is (for Retry-After). Allocates nothing
  // for a bucket it has seen.
  int64_t Admit(std::string_view kind, std::string_view name, RateRule rule);

  // Counts one more request of the named bucket being answered, when fewer than `limit` (times
  // the scale) are: true; else false, counting nothing. Leave() when it has been answered.
  bool Enter(std::string_view kind, std::string_view name, int64_t limit);
  void Leave(std::string_view kind, std::string_view name);
  // The limit Enter() applies to `limit`: scaled, at least 1.
  int64_t Scaled(int64_t limit) const;

  bool enabled() const { return scale_ > 0; }
  size_t buckets() const { return buckets_.size(); }

 private:
  struct Bucket {
    double tokens = 0;
    int64_t at_ms = 0;
    double capacity = 0;
    double per_ms = 0;  // refill rate
  };
  const Clock* clock_;
  double scale_;
  std::unordered_map<std::string, Bucket> buckets_;
  std::unordered_map<std::string, int64_t> in_flight_;  // by bucket name; none at 0
  // A bucket's name, from its kind and name, in scratch_ (no allocation once it has grown).
  const std::string& Name(std::string_view kind, std::string_view name);
  std::string scratch_;  // the name being looked up
};

}  // namespace gantry::api
