#include "api/route_table.h"

#include <cstdio>
#include <cstdlib>

namespace gantry::api {

const char* AccessName(Access a) {
  switch (a) {
    case Access::kPublic:
      return "public";
    case Access::kWorker:
      return "worker";
    case Access::kAdmin:
      return "admin";
    case Access::kDeploy:
      return "deploy";
    case Access::kInvoke:
      return "invoke";
    case Access::kRead:
      return "read";
    case Access::kNode:
      return "node";
  }
  return "?";
}

void RouteTable::Add(std::string method, std::string path, Access access, std::string summary,
                     RouteHandler handler) {
  auto id = router_.Add(method, path);
  if (!id.ok()) {
    fprintf(stderr, "gantry: bad route table: %s\n", id.status().ToString().c_str());
    abort();
  }
  std::optional<RateRule> rate = EndpointRateRule(path);
  routes_.push_back(Route{std::move(method), std::move(path), access, std::move(summary),
                          std::move(handler), rate});
}

RouteTable::Found RouteTable::Find(std::string_view method, std::string_view path) const {
  Found f;
  f.match = router_.Find(method, path);
  if (f.match.id >= 0) f.route = &routes_[f.match.id];
  return f;
}

}  // namespace gantry::api
