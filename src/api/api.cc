#include "api/api.h"

#include <algorithm>
#include <cstdint>

#include "api/http_status.h"

namespace gantry::api {

namespace {

json::object RoutesJson(const RouteTable& table) {
  json::array list;
  for (const Route& r : table.routes()) {
    list.push_back(json::object{{"method", r.method},
                                {"path", r.path},
                                {"access", AccessName(r.access)},
                                {"summary", r.summary}});
  }
  return json::object{{"routes", std::move(list)}};
}

bool ScopeAllows(Scope scope, Access access) {
  switch (access) {
    case Access::kAdmin:
      return scope == Scope::kAdmin;
    case Access::kDeploy:
      return scope == Scope::kAdmin || scope == Scope::kDeploy;
    case Access::kRead:
      return scope == Scope::kAdmin || scope == Scope::kDeploy || scope == Scope::kRead;
    case Access::kInvoke:
      return scope == Scope::kAdmin || scope == Scope::kDeploy || scope == Scope::kInvoke;
    case Access::kNode:
      return scope == Scope::kAdmin || scope == Scope::kNode;
    case Access::kPublic:
    case Access::kWorker:
      return false;  // not key routes
  }
  return false;
}

}  // namespace

Status Permits(const Grant& g, Access access, std::string_view endpoint, std::string_view node) {
  if (!ScopeAllows(g.scope, access)) {
    return PermissionDenied(std::string("this key's scope is ") + ScopeName(g.scope) +
                            "; this route needs " + AccessName(access) +
                            (access == Access::kAdmin ? "" : " (or admin)"));
  }
  if (g.scope == Scope::kInvoke && !g.endpoints.empty() && !endpoint.empty() &&
      std::find(g.endpoints.begin(), g.endpoints.end(), endpoint) == g.endpoints.end()) {
    return PermissionDenied("this key may not call endpoint " + std::string(endpoint));
  }
  if (g.scope == Scope::kNode && !node.empty() && node != g.node_id) {
    return PermissionDenied("this key acts for node " + g.node_id + ", not " + std::string(node));
  }
  return Status::Ok();
}

Api::Api(Services services)
    : services_(std::move(services)),
      limiter_(std::make_shared<RateLimiter>(services_.clock, services_.options.rate_limit_scale)) {
  table_.Add("GET", "/healthz", Access::kPublic, "the server is up",
             [](Call& c) { c.Send(OkResponse(R"({"status":"ok"})")); });
  table_.Add("GET", "/v1/routes", Access::kAdmin, "this table: every route with its access",
             [this](Call& c) { c.Send(JsonResponse(200, RoutesJson(table_))); });
  AddClientRoutes(&services_, &table_);
  AddWorkerRoutes(&services_, &table_);
  AddManagementRoutes(&services_, &table_);
  AddBlobRoutes(&services_, &table_);
  AddNodeRoutes(&services_, &table_);
}

Status Api::Authorize(const Route& route, Call* call) const {
  std::string_view auth = call->req.header("authorization");
  switch (route.access) {
    case Access::kPublic:
      return Status::Ok();
    case Access::kWorker: {
      auto w = services_.workers->Authenticate(call->param("endpoint"), call->param("worker"),
                                               std::string(BearerToken(auth)));
      if (!w.ok()) return w.status();
      call->worker = *w;
      return Status::Ok();
    }
    case Access::kAdmin:
    case Access::kDeploy:
    case Access::kInvoke:
    case Access::kRead:
    case Access::kNode: {
      const ApiKey* key = services_.keys->Check(auth);
      if (!key) return Unauthenticated(auth.empty() ? "missing API key" : "invalid API key");
      call->key = key;
      return Permits(key->grant, route.access, call->param("endpoint"), call->param("node"));
    }
  }
  return Internal("unknown access kind");
}

size_t Api::BodyLimitFor(std::string_view method, std::string_view target,
                         std::string_view authorization) const {
  const std::string_view path = target.substr(0, target.find('?'));
  RouteTable::Found found = table_.Find(method, path);
  if (!found.route || found.route->access == Access::kPublic) return kUnauthenticatedBodyLimit;
  Call call{{}, std::move(found.match), nullptr};
  call.req.headers.push_back({"Authorization", std::string(authorization)});
  return Authorize(*found.route, &call).ok() ? SIZE_MAX : kUnauthenticatedBodyLimit;
}

void Api::Handle(http::Request&& req, std::shared_ptr<http::Responder> resp) {
  RouteTable::Found found = table_.Find(req.method, req.path());
  if (!found.route) {
    // Who has no key learns nothing of which paths exist.
    if (!services_.keys->Check(req.header("authorization"))) {
      return resp->Send(ErrorResponse(Unauthenticated(
          req.header("authorization").empty() ? "missing API key" : "invalid API key")));
    }
    return resp->Send(
        ErrorResponse(NotFound("no such route: " + req.method + " " + std::string(req.path()))));
  }
  Call call{std::move(req), std::move(found.match), std::move(resp)};
  if (Status st = Authorize(*found.route, &call); !st.ok()) {
    return call.Send(ErrorResponse(st));
  }
  std::string why;
  if (int64_t wait_ms = RateLimited(*found.route, call, &why); wait_ms > 0) {
    http::Response r = ErrorResponse(ResourceExhausted(why));
    r.headers.push_back({"Retry-After", std::to_string((wait_ms + 999) / 1000)});
    return call.Send(std::move(r));
  }
  if (!EnterConcurrent(*found.route, &call)) return;
  found.route->handler(call);
}

namespace {

// Passes the answer on, and tells the limiter that the request no longer counts as being
// answered (also when it is dropped unanswered).
class LeavingResponder final : public http::Responder {
 public:
  LeavingResponder(std::shared_ptr<http::Responder> inner, std::shared_ptr<RateLimiter> limiter,
                   std::string kind, std::string name)
      : inner_(std::move(inner)),
        limiter_(std::move(limiter)),
        kind_(std::move(kind)),
        name_(std::move(name)) {}
  ~LeavingResponder() override { Leave(); }
  void Send(http::Response r, std::function<void(bool)> on_done) override {
    Leave();
    inner_->Send(std::move(r), std::move(on_done));
  }

 private:
  void Leave() {
    if (limiter_) limiter_->Leave(kind_, name_);
    limiter_.reset();
  }
  std::shared_ptr<http::Responder> inner_;
  std::shared_ptr<RateLimiter> limiter_;
  std::string kind_, name_;
};

}  // namespace

bool Api::EnterConcurrent(const Route& route, Call* call) {
  const std::string& endpoint = call->param("endpoint");
  const std::optional<RateRule>& rule = route.rate;
  if (!limiter_->enabled() || endpoint.empty() || !rule || rule->concurrent <= 0) return true;
  if (!limiter_->Enter(route.path, endpoint, rule->concurrent)) {
    http::Response r = ErrorResponse(ResourceExhausted(
        "rate limit: endpoint " + endpoint + " is answering " +
        std::to_string(limiter_->Scaled(rule->concurrent)) + " " + route.method + " " + route.path +
        " requests at once, its most (RunPod's limit, times --rate-limit-scale)"));
    r.headers.push_back({"Retry-After", "1"});
    call->Send(std::move(r));
    return false;
  }
  call->resp =
      std::make_shared<LeavingResponder>(std::move(call->resp), limiter_, route.path, endpoint);
  return true;
}

int64_t Api::RateLimited(const Route& route, const Call& call, std::string* why) {
  if (!limiter_->enabled()) return 0;
  if (call.key) {
    if (int64_t wait = limiter_->Admit("key", call.key->id, kKeyRule); wait > 0) {
      *why = "rate limit: key " + call.key->name + " made more than " +
             std::to_string(kKeyRule.requests) + " requests in " +
             std::to_string(kKeyRule.window_ms / 1000) + " s (times --rate-limit-scale)";
      return wait;
    }
  }
  const std::string& endpoint = call.param("endpoint");
  const std::optional<RateRule>& rule = route.rate;
  if (endpoint.empty() || !rule) return 0;
  // Named by the route's pattern and the endpoint: one bucket per operation of an endpoint.
  if (int64_t wait = limiter_->Admit(route.path, endpoint, *rule); wait > 0) {
    *why = "rate limit: endpoint " + endpoint + " took more than " +
           std::to_string(rule->requests) + " " + route.method + " " + route.path +
           " requests in " + std::to_string(rule->window_ms / 1000) +
           " s (RunPod's limit, times --rate-limit-scale)";
    return wait;
  }
  return 0;
}

}  // namespace gantry::api
