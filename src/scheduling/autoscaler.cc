#include "scheduling/autoscaler.h"

#include <algorithm>

namespace gantry::scheduling {

static int64_t CeilDiv(int64_t a, int64_t b) { return b <= 0 ? 0 : (a + b - 1) / b; }

ScaleDecision DecideScale(const EndpointSpec& spec, const EndpointLoad& load,
                          const std::vector<WorkerLoad>& workers, int64_t now_ms) {
  const int64_t active = static_cast<int64_t>(workers.size());
  const int64_t concurrency = std::max(1, spec.concurrency);
  const int64_t needed = CeilDiv(load.queued + load.running, concurrency);
  int64_t target = CeilDiv(load.running, concurrency);  // never below what runs now
  if (spec.scaler_type == "REQUEST_COUNT") {
    target = std::max(target, CeilDiv(load.queued + load.running, std::max(1, spec.scaler_value)));
  } else {  // QUEUE_DELAY
    int64_t free_slots = active * concurrency - load.running;
    bool waited = load.oldest_queued_ms > 0 &&
                  now_ms - load.oldest_queued_ms > static_cast<int64_t>(spec.scaler_value) * 1000;
    if (load.queued > 0 && active == 0) target = std::max<int64_t>(target, 1);
    if (load.queued > 0 && free_slots <= 0 && waited) target = std::max(target, needed);
    // Jobs queued but not yet waited long: keep the workers there are, start none.
    if (load.queued > 0 && !waited) target = std::max(target, std::min(active, needed));
  }
  if (load.queued + load.running > 0) target += spec.buffer_workers;
  target = std::clamp<int64_t>(target, spec.workers_min, spec.workers_max);

  ScaleDecision d;
  d.target = target;
  d.start = std::max<int64_t>(0, target - active);
  if (active > target) {
    // Stop the workers idle the longest first, and only those idle past idleTimeout.
    std::vector<const WorkerLoad*> idle;
    for (const auto& w : workers) {
      if (w.ready && w.jobs == 0 &&
          now_ms - w.idle_since_ms >= static_cast<int64_t>(spec.idle_timeout_s) * 1000) {
        idle.push_back(&w);
      }
    }
    std::sort(idle.begin(), idle.end(), [](const WorkerLoad* a, const WorkerLoad* b) {
      return a->idle_since_ms < b->idle_since_ms;
    });
    for (const auto* w : idle) {
      if (static_cast<int64_t>(d.stop.size()) >= active - target) break;
      d.stop.push_back(w->id);
    }
  }
  return d;
}

}  // namespace gantry::scheduling
