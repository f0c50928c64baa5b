#pragma once
// The HTTP API: RunPod's client routes and worker routes under /v2, Gantry's management API
// under /v1 (DESIGN §2). Maps Status codes to HTTP statuses (one table, HttpStatusFor).
//
// Threading: every handler runs on the event loop thread that owns the JobManager and the
// registries; nothing here locks.

#include <memory>
#include <string>

#include "api/keys.h"
#include "http/http.h"
#include "jobs/job_manager.h"
#include "scheduling/log_store.h"
#include "scheduling/registry.h"
#include "scheduling/scheduler.h"
#include "store/blob_store.h"

namespace gantry::api {

int HttpStatusFor(Code code);
// {"error": {"code": ..., "message": ...}} with the matching HTTP status.
http::Response ErrorResponse(const Status& status);

struct ApiOptions {
  // Base URL workers use to reach this server, e.g. "http://127.0.0.1:8000".
  std::string public_url;
  size_t run_body_limit = 10u << 20;      // /run bodies. Default: 10 MiB.
  size_t runsync_body_limit = 20u << 20;  // /runsync bodies. Default: 20 MiB.
  int64_t take_wait_ms = 60'000;          // job-take long-poll. Default: 60 s.
  int64_t stop_wait_ms = 60'000;          // job-stop long-poll. Default: 60 s.
  int64_t runsync_default_wait_ms = 90'000;
};

class ApiServer {
 public:
  ApiServer(const Clock* clock, jobs::JobManager* jobs, scheduling::EndpointRegistry* endpoints,
            scheduling::WorkerRegistry* workers, scheduling::Scheduler* scheduler,
            scheduling::LogStore* logs, scheduling::Metering* metering, store::BlobStore* blobs,
            KeyRing* keys, ApiOptions options);
  // The http::Handler for every request.
  void Handle(http::Request&& req, std::shared_ptr<http::Responder> resp);
  // Environment for a new worker of `endpoint_id` (runpod-protocol.md §2).
  std::map<std::string, std::string> WorkerEnv(const scheduling::EndpointSpec& spec,
                                               const scheduling::WorkerInfo& worker,
                                               const std::string& secret) const;

 private:
  using Resp = std::shared_ptr<http::Responder>;
  void Client(http::Request& req, const std::string& ep, const std::string& action,
              const std::string& arg, Resp resp);
  void Worker(http::Request& req, const std::string& ep, const std::string& action,
              const std::string& worker, const std::string& arg, Resp resp);
  void Management(http::Request& req, const std::vector<std::string>& seg, Resp resp);
  void Nodes(http::Request& req, const std::vector<std::string>& seg, Resp resp);
  void Logs(http::Request& req, Resp resp);
  void Blobs(http::Request& req, const std::vector<std::string>& seg, Resp resp);
  // NotFound unless the spec's bundle (if any) has been uploaded.
  Status CheckBundle(const json::value& spec) const;
  json::object HealthJson(const std::string& endpoint_id);
  void Submit(http::Request& req, const std::string& ep, bool sync, Resp resp);
  void SendJobs(const std::string& worker_id, std::vector<const jobs::Job*> js, bool batch,
                Resp resp);

  const Clock* clock_;
  jobs::JobManager* jobs_;
  scheduling::EndpointRegistry* endpoints_;
  scheduling::WorkerRegistry* workers_;
  scheduling::Scheduler* scheduler_;
  scheduling::LogStore* logs_;
  scheduling::Metering* metering_;
  store::BlobStore* blobs_;
  KeyRing* keys_;
  ApiOptions options_;
};

}  // namespace gantry::api
