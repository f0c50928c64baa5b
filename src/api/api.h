#pragma once
// The HTTP API (DESIGN §2): RunPod's client and worker routes under /v2, Gantry's management
// API and the node protocol under /v1. Every route is in one RouteTable, built here from the
// route groups (client_routes.cc, worker_routes.cc, management_routes.cc, blob_routes.cc,
// node_routes.cc); Handle() matches a request against it, checks the credential the route
// needs, and runs the route's handler.
//
// Threading: Handle() and every handler run on the event loop thread that owns the services.

#include <memory>

#include "api/keys.h"
#include "api/rate_limits.h"
#include "api/route_table.h"
#include "api/services.h"
#include "http/http.h"

namespace gantry::api {

// Route groups, each adding its routes to `table`; handlers keep `s`, which must outlive them.
void AddClientRoutes(const Services* s, RouteTable* table);
void AddWorkerRoutes(const Services* s, RouteTable* table);
void AddManagementRoutes(const Services* s, RouteTable* table);
void AddBlobRoutes(const Services* s, RouteTable* table);
void AddNodeRoutes(const Services* s, RouteTable* table);

// Whether a key with `grant` may call a route needing `access` (a key kind: kAdmin .. kNode)
// whose path names `endpoint` and `node` ("" where it names none). PermissionDenied saying what
// the route needs otherwise. The table of what each scope allows is in keys.h.
Status Permits(const Grant& grant, Access access, std::string_view endpoint, std::string_view node);

class Api {
 public:
  explicit Api(Services services);
  Api(const Api&) = delete;
  Api& operator=(const Api&) = delete;

  // The http::Handler for every request.
  void Handle(http::Request&& req, std::shared_ptr<http::Responder> resp);
  // The body limit of a request, from its head (http::ServerOptions::body_limit_for): no limit
  // of its own (SIZE_MAX: the server's applies) for a request that Authorize would let through,
  // kUnauthenticatedBodyLimit for any other (a public route, no key, a wrong key or scope, no
  // such route).
  size_t BodyLimitFor(std::string_view method, std::string_view target,
                      std::string_view authorization) const;
  static constexpr size_t kUnauthenticatedBodyLimit = 64u << 10;
  const RouteTable& table() const { return table_; }

 private:
  // Checks the credential `route` needs; for worker routes, sets call->worker.
  Status Authorize(const Route& route, Call* call) const;

  // 0 when `call` (let through `route`) is within its key's and its endpoint's rate limits;
  // else how many ms until it would be, with *why set.
  int64_t RateLimited(const Route& route, const Call& call, std::string* why);
  // Counts `call` among its endpoint's requests of its route being answered, and true; or
  // answers 429 when as many as RunPod allows are (times the scale), and false.
  bool EnterConcurrent(const Route& route, Call* call);

  Services services_;
  RouteTable table_;
  // Shared with the responders of requests being answered, which may outlive the Api.
  std::shared_ptr<RateLimiter> limiter_;
};

}  // namespace gantry::api
