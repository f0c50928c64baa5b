#pragma once
// What the route handlers work with: the server's modules, owned by the composition root
// (server_main.cc), and the API's own options. Handlers run on the event loop thread that owns
// all of these (DESIGN §6), so nothing here locks.

#include <cstddef>
#include <cstdint>

#include "api/keys.h"
#include "common/blob_store.h"
#include "common/env.h"
#include "http/address_policy.h"
#include "jobs/job_manager.h"
#include "scheduling/log_store.h"
#include "scheduling/metering.h"
#include "scheduling/registry.h"
#include "scheduling/scheduler.h"
#include "scheduling/worker_env.h"

namespace gantry::api {

struct ApiOptions {
  size_t run_body_limit = 10u << 20;         // /run bodies. Default: 10 MiB.
  size_t runsync_body_limit = 20u << 20;     // /runsync bodies. Default: 20 MiB.
  int64_t take_wait_ms = 60'000;             // job-take long-poll. Default: 60 s.
  int64_t stop_wait_ms = 60'000;             // job-stop long-poll. Default: 60 s.
  int64_t runsync_default_wait_ms = 90'000;  // /runsync and /status-sync without ?wait=
  // While a job runs, /stream waits this long for a chunk before answering none. Default: 1 s.
  int64_t stream_wait_ms = 1'000;
  // Where webhooks may go: a /run whose webhook names a refused address (an IP literal) is
  // refused at once; names are checked again when the webhook is sent. Null: anywhere.
  std::shared_ptr<const http::AddressPolicy> webhook_policy;
  // Multiplies every rate limit (rate_limits.h); 0: none. Default: 1, RunPod's limits.
  double rate_limit_scale = 1;
};

// Not owned; every pointer is set and outlives the Api.
struct Services {
  const Clock* clock = nullptr;
  jobs::JobManager* jobs = nullptr;
  scheduling::EndpointRegistry* endpoints = nullptr;
  scheduling::WorkerRegistry* workers = nullptr;
  scheduling::Scheduler* scheduler = nullptr;
  scheduling::LogStore* logs = nullptr;
  scheduling::Metering* metering = nullptr;
  const scheduling::WorkerEnvFactory* worker_env = nullptr;
  BlobStore* blobs = nullptr;
  KeyRing* keys = nullptr;
  ApiOptions options;
};

}  // namespace gantry::api
