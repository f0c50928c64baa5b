#pragma once
// An endpoint's spec: RunPod's field names where RunPod has one, Gantry's own otherwise
// (runpod-protocol.md §3).

#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "common/json.h"
#include "common/status.h"
#include "jobs/job.h"
#include "protocol/node_protocol.h"

namespace gantry::scheduling {

using protocol::ImageAccess;

struct WorkerCommand {
  std::vector<std::string> command;  // argv; empty: the endpoint has no process worker yet
  std::string workdir;
  std::map<std::string, std::string> env;
};

// ImageAccess: a container image instead of a bundle. worker.command, if given, replaces the
// image's cmd; worker.env adds to its env.
struct EndpointSpec : ImageAccess {
  std::string id;
  std::string name;
  int workers_min = 0;                              // workersMin. Default: 0.
  int workers_max = 3;                              // workersMax. Default: 3.
  int idle_timeout_s = 5;                           // idleTimeout, seconds. Default: 5.
  int64_t execution_timeout_ms = 600'000;           // executionTimeoutMs. Default: 600 000.
  std::string scaler_type = "QUEUE_DELAY";          // QUEUE_DELAY | REQUEST_COUNT.
  int scaler_value = 4;                             // seconds (QUEUE_DELAY) or jobs per worker.
  std::vector<std::string> gpu_type_ids = {"cpu"};  // gpuTypeIds, in order of preference.
  int gpu_count = 1;                                // gpuCount per worker. Default: 1.
  std::map<std::string, std::string> env;           // env for every worker.
  int concurrency = 1;                              // jobs per worker. Default: 1.
  int buffer_workers = 0;  // bufferWorkers: extra idle workers while busy. Default: 0.
  int max_attempts = 3;    // maxAttempts. Default: 3.
  // maxFailedStarts: after this many failed starts in a row (of the current version), the
  // endpoint is unhealthy and its queued jobs fail with the worker's error and log. 0: never
  // fail jobs for it. Default: 3.
  int max_failed_starts = 3;
  double cpu = 0.25;         // cores per worker, a soft share. Default: 0.25.
  int64_t memory_mb = 1024;  // hard limit per worker. Default: 1024.
  // flashboot (RunPod's name): agents keep a template and a snapshot of each version and fork
  // workers from them (DESIGN §4). Default: true.
  bool flashboot = true;
  WorkerCommand worker;
  std::string bundle;  // digest of the code bundle (gantry deploy); "" for none
  std::string volume;  // a named volume (a directory on the node); "" for none
  std::string volume_mount_path = "/runpod-volume";
  bool read_only_rootfs = false;
  // Workers share their node's network namespace instead of having one of their own
  // (docs/security.md): only for an endpoint that needs the host's network.
  bool host_network = false;
  int64_t created_ms = 0;
  int64_t updated_ms = 0;
  int64_t version = 1;  // bumped on every update

  // The spec as the API shows it; with_secrets (for the store only) includes the registry
  // password, which the API never shows.
  json::object ToJson(bool with_secrets = false) const;
  jobs::QueueConfig ToQueueConfig() const;
};

// Applies the fields present in `patch` to `spec` (create: over the defaults; update: over the
// current spec) and validates the result. InvalidArgument names the offending field.
Status ApplySpecPatch(const json::value& patch, EndpointSpec* spec);

// The fields a spec may hold (the API's names; ApplySpecPatch refuses any other), and those of
// its "worker" object.
const std::vector<std::string_view>& SpecFieldNames();
const std::vector<std::string_view>& WorkerFieldNames();

// InvalidArgument "unknown field: workersMaxx (did you mean workersMax?)" for the first field of
// `spec`, or of its "worker" object ("worker.comand (did you mean worker.command?)"), that a
// spec does not have; the hint only when a known name is near (DidYouMean). Checks names only.
Status CheckSpecFieldNames(const json::object& spec);

// Endpoint ids are used in URLs: 1-64 characters of [A-Za-z0-9_-].
bool ValidEndpointId(const std::string& id);

}  // namespace gantry::scheduling
