#include "api/json_views.h"

namespace gantry::api {

json::object JobCountsJson(const jobs::EndpointCounts& jc) {
  return json::object{{"completed", jc.completed},
                      {"failed", jc.failed},
                      {"inProgress", jc.in_progress},
                      {"inQueue", jc.in_queue},
                      {"retried", jc.retried}};
}

json::object WorkerJson(const scheduling::WorkerInfo& w, const jobs::JobManager& jm) {
  json::object o;
  o["id"] = w.id;
  o["endpointId"] = w.endpoint_id;
  const bool live = w.state != scheduling::WorkerState::kStopped;
  o["state"] = live && w.stopping_ms ? "STOPPING"
               : live && w.draining  ? "DRAINING"
                                     : scheduling::WorkerStateName(w.state);
  o["createdAt"] = w.created_ms;
  o["lastSeenAt"] = w.last_seen_ms;
  o["readyAt"] = w.ready_ms;
  if (!w.node_id.empty()) {
    scheduling::AddPlacementJson(w, &o);
    o["startPath"] = protocol::StartPathName(w.start_path);
    if (!w.start_note.empty()) o["startNote"] = w.start_note;
    // The cold-start breakdown, ms from placement: agent received, process spawned, ready.
    auto phase = [&](int64_t t) { return t > 0 ? json::value(t - w.placed_ms) : json::value(); };
    o["coldStart"] = json::object{{"placedAt", w.placed_ms},
                                  {"receivedMs", phase(w.received_ms)},
                                  {"spawnedMs", phase(w.spawned_ms)},
                                  {"readyMs", phase(w.ready_ms)}};
  }
  json::array held;
  for (const auto& id : jm.HeldBy(w.id)) held.emplace_back(id);
  o["jobs"] = std::move(held);
  if (!w.last_error.empty()) o["lastError"] = w.last_error;
  if (!w.stop_reason.empty()) o["stopReason"] = w.stop_reason;
  return o;
}

json::object HealthJson(const Services& s, const std::string& ep) {
  auto wc = s.workers->Counts(ep);
  const scheduling::EndpointHealth& h = s.scheduler->Health(ep);
  // Failed starts count as unhealthy workers; workers wanted but placed nowhere as throttled.
  json::object workers{{"idle", wc.idle},
                       {"initializing", wc.initializing},
                       {"ready", wc.ready},
                       {"running", wc.running},
                       {"throttled", wc.throttled + h.throttled},
                       {"unhealthy", wc.unhealthy + h.consecutive_failures}};
  json::object o{{"jobs", JobCountsJson(s.jobs->Counts(ep))}, {"workers", std::move(workers)}};
  o["status"] = h.unhealthy ? "unhealthy" : "healthy";  // Gantry's own, beyond RunPod's keys
  if (!h.last_error.empty()) o["lastError"] = h.last_error;
  if (std::string why = s.scheduler->Unplaceable(ep); !why.empty()) o["unplaceable"] = why;
  return o;
}

}  // namespace gantry::api
