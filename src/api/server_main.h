#pragma once
// `gantry server`: wires the store, the JobManager, the registries and the HTTP API together
// and runs them on one event loop until SIGINT/SIGTERM.

#include <functional>
#include <string>
#include <vector>

#include "common/log.h"

namespace gantry::api {

struct ServerConfig {
  std::string host = "127.0.0.1";
  uint16_t port = 8000;
  std::string data_dir = "./gantry-data";
  std::string public_url;  // Default: http://HOST:PORT (127.0.0.1 when HOST is 0.0.0.0).
  bool sync_full = true;   // fsync each group commit. Default: on.
  int64_t ping_interval_ms = 10'000;
  int64_t run_retention_ms = 30 * 60 * 1000;
  int64_t sync_retention_ms = 60 * 1000;
  int64_t stop_grace_ms = 30'000;
  // A registered worker not heard from (started by hand, or loading its model) is lost after
  // this. Default: 10 min.
  int64_t worker_start_timeout_ms = 10 * 60 * 1000;
  int64_t webhook_retry_ms = 10'000;
  // Prefixes (CIDR) webhooks may reach besides public addresses: loopback, private ranges and
  // link-local are refused otherwise.
  std::vector<std::string> webhook_allow;
  // Open connections at most (http::ServerOptions::max_connections); 0: from RLIMIT_NOFILE.
  size_t max_connections = 0;
  // Multiplies every rate limit (api/rate_limits.h: RunPod's per endpoint, 10000 per key in
  // 10 s); 0: none. Default: 1.
  double rate_limit_scale = 1;
  // Serve HTTPS with this certificate chain and key (PEM); "" for plain HTTP.
  std::string tls_cert_file;
  std::string tls_key_file;
  std::string prices_file;  // JSON {"H100": 0.00116, ...}: USD per second. Default: RunPod's.
  size_t run_body_limit = 10u << 20;
  size_t runsync_body_limit = 20u << 20;
  // `gantry up`: called once the server listens, with its URL and a key for an in-process
  // agent; `on_shutdown` is called before the event loop stops.
  // `gantry up`: called once the server listens, with a node key for local_node_id.
  std::function<void(const std::string& url, const std::string& key)> on_listening;
  std::string local_node_id;
  std::function<void()> on_shutdown;
};

// Returns the process exit code.
int RunServer(const ServerConfig& config);

}  // namespace gantry::api
