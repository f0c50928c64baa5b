#pragma once
// How the API shows the server's state as JSON: the objects more than one route group returns.

#include <string>

#include "api/services.h"
#include "common/json.h"

namespace gantry::api {

// {"completed", "failed", "inProgress", "inQueue", "retried"}
json::object JobCountsJson(const jobs::EndpointCounts& counts);
// A worker with its state, placement, cold-start phases and held jobs.
json::object WorkerJson(const scheduling::WorkerInfo& w, const jobs::JobManager& jobs);
// RunPod's /health object (jobs and workers counts), plus Gantry's "status", "lastError" and,
// when no live node could ever run its workers, "unplaceable" (why).
json::object HealthJson(const Services& s, const std::string& endpoint_id);

}  // namespace gantry::api
