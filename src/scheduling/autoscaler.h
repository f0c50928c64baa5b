#pragma once
// The autoscaler's decision for one endpoint, with RunPod's semantics (runpod-protocol.md §3):
// a pure function of the endpoint's spec, its load and its workers, so that QUEUE_DELAY and
// REQUEST_COUNT are tested with a fake clock.
//
//   REQUEST_COUNT: target = ceil((queued + running) / scalerValue).
//   QUEUE_DELAY:   an endpoint with jobs queued and no worker gets one at once; once the oldest
//                  queued job has waited more than scalerValue seconds with no free slot, the
//                  target becomes every worker the queue needs (ceil((queued + running) /
//                  concurrency)).
//   Both: plus bufferWorkers while the endpoint is busy; at least workersMin; at most workersMax.
//   Low-priority jobs never count toward a scale-up. Only workers idle for idleTimeout are
//   stopped, and never below the target.

#include <cstdint>
#include <string>
#include <vector>

#include "scheduling/endpoint_spec.h"

namespace gantry::scheduling {

struct EndpointLoad {
  int64_t queued = 0;            // normal-priority jobs waiting
  int64_t queued_low = 0;        // low-priority jobs waiting (never scale up)
  int64_t running = 0;           // jobs in progress
  int64_t oldest_queued_ms = 0;  // creation time of the oldest normal queued job; 0: none
};

struct WorkerLoad {
  std::string id;
  bool ready = false;         // has taken a job request (false: still starting)
  int64_t jobs = 0;           // jobs it holds now
  int64_t idle_since_ms = 0;  // when it last became idle (or ready)
};

struct ScaleDecision {
  int64_t target = 0;             // workers the endpoint should have
  int64_t start = 0;              // new workers to place now
  std::vector<std::string> stop;  // idle workers to stop now
};

ScaleDecision DecideScale(const EndpointSpec& spec, const EndpointLoad& load,
                          const std::vector<WorkerLoad>& workers, int64_t now_ms);

}  // namespace gantry::scheduling
