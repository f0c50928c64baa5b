#include "api/api.h"

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

}  // namespace

Api::Api(Services services) : services_(std::move(services)) {
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
    case Access::kNode:
      // Keys have no scopes yet: any valid API key passes every key kind.
      if (services_.keys->Check(auth)) return Status::Ok();
      return Unauthenticated(auth.empty() ? "missing API key" : "invalid API key");
  }
  return Internal("unknown access kind");
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
  found.route->handler(call);
}

}  // namespace gantry::api
