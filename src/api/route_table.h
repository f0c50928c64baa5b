#pragma once
// The route table: every route of the server declared once, with the method, the path pattern
// (http/router.h), the kind of credential it needs, a one-line summary and its handler. The
// table is the single place a route exists: the dispatcher (api.h) matches against it, and
// GET /v1/routes and docs/api.md (checked by a test) list it.

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "api/rate_limits.h"
#include "http/http.h"
#include "http/router.h"

namespace gantry::scheduling {
struct WorkerInfo;
}

namespace gantry::api {

struct ApiKey;

// The credential a route needs (DESIGN §8). The key kinds (kAdmin .. kNode) are passed by keys
// whose scope allows them (api.h: Permits; keys.h: Scope).
enum class Access {
  kPublic,  // nothing (/healthz)
  kWorker,  // the worker's own secret; the path names {endpoint} and {worker}
  kAdmin,   // an admin key: keys, routes
  kDeploy,  // endpoints, bundles
  kInvoke,  // submit and control jobs
  kRead,    // read state: jobs, workers, logs, usage, nodes
  kNode,    // an agent: the node protocol
};
const char* AccessName(Access a);  // "public", "worker", "admin", ...

// One request on its way through its route.
struct Call {
  http::Request req;
  http::Router::Match match;
  std::shared_ptr<http::Responder> resp;
  scheduling::WorkerInfo* worker = nullptr;  // kWorker routes: the authenticated worker
  const ApiKey* key = nullptr;               // key routes: the key that was let through

  // A path parameter, e.g. param("endpoint"); "" when the route has none of that name.
  const std::string& param(std::string_view name) const { return match.param(name); }
  void Send(http::Response r) { resp->Send(std::move(r)); }
};

using RouteHandler = std::function<void(Call& call)>;

struct Route {
  std::string method;
  std::string path;  // pattern, e.g. "/v2/{endpoint}/status/{job}"
  Access access;
  std::string summary;
  RouteHandler handler;
  // RunPod's limits of this route per endpoint (rate_limits.h), stated once with the route;
  // null for a route without them.
  std::optional<RateRule> rate;
};

class RouteTable {
 public:
  // Declares a route. A malformed pattern, or a method and pattern declared twice, is a bug in
  // the table: it aborts at start-up, so it can never ship.
  void Add(std::string method, std::string path, Access access, std::string summary,
           RouteHandler handler);
  struct Found {
    const Route* route = nullptr;  // null: no route has this method and path
    http::Router::Match match;
  };
  Found Find(std::string_view method, std::string_view path) const;
  const std::vector<Route>& routes() const { return routes_; }

 private:
  http::Router router_;
  std::vector<Route> routes_;  // by router id
};

}  // namespace gantry::api
