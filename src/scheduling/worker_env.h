#pragma once
// The environment a new worker starts with (runpod-protocol.md §2): the endpoint's env and its
// worker's env, then the RunPod variables that give the worker its identity and the URLs of the
// worker protocol on this server.

#include <map>
#include <string>

#include "scheduling/endpoint_spec.h"
#include "scheduling/registry.h"

namespace gantry::scheduling {

class WorkerEnvFactory {
 public:
  // `public_url`: the base URL workers reach this server at, e.g. "http://127.0.0.1:8000".
  // `ping_interval_ms`: RUNPOD_PING_INTERVAL (WorkerOptions::ping_interval_ms).
  WorkerEnvFactory(std::string public_url, int64_t ping_interval_ms)
      : public_url_(std::move(public_url)), ping_interval_ms_(ping_interval_ms) {}

  // The environment of `worker` of `spec`, which authenticates with `secret`.
  std::map<std::string, std::string> Build(const EndpointSpec& spec, const WorkerInfo& worker,
                                           const std::string& secret) const;

 private:
  std::string public_url_;
  int64_t ping_interval_ms_;
};

}  // namespace gantry::scheduling
