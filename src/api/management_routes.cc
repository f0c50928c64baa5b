// Gantry's management API (/v1, DESIGN §2.3): endpoints, workers, usage, logs and API keys. The
// CLI and the dashboard use nothing else.
#include <algorithm>

#include "api/api.h"
#include "api/bundles.h"
#include "api/http_status.h"
#include "api/json_views.h"

namespace gantry::api {
namespace {

json::array WorkersJson(const Services& s, const std::string& endpoint_id) {
  json::array ws;
  for (const auto* w : s.workers->List(endpoint_id)) ws.push_back(WorkerJson(*w, *s.jobs));
  return ws;
}

// An endpoint with its workers, job counts, health (with the last failed worker's lines) and,
// for an image endpoint, the pull of its image on the nodes.
json::object EndpointJson(const Services& s, const scheduling::EndpointSpec& spec) {
  json::object o = spec.ToJson();
  o["workers"] = WorkersJson(s, spec.id);
  o["jobs"] = JobCountsJson(s.jobs->Counts(spec.id));
  json::object health = HealthJson(s, spec.id);
  json::array tail;
  for (const auto& l : s.scheduler->Health(spec.id).last_log) tail.emplace_back(l);
  health["lastLog"] = std::move(tail);
  o["health"] = std::move(health);
  if (!spec.image.empty()) o["imagePulls"] = s.scheduler->ImagePulls(spec.image);
  return o;
}

// An endpoint spec's body: JSON with finite numbers only (`cpu is not a finite number: ...`).
void CreateEndpoint(const Services& s, Call& c) {
  auto body = ParseFiniteJson(c.req.body);
  if (!body.ok()) return c.Send(ErrorResponse(body.status()));
  if (Status b = CheckBundle(*s.blobs, *body); !b.ok()) return c.Send(ErrorResponse(b));
  auto d = Deferred(c.resp);
  auto spec = s.endpoints->Create(*body, d.durable);
  if (!spec.ok()) return c.Send(ErrorResponse(spec.status()));
  *d.reply = JsonResponse(201, spec->ToJson());
}

void UpdateEndpoint(const Services& s, Call& c) {
  const std::string& id = c.param("endpoint");
  if (!s.endpoints->Get(id)) return c.Send(ErrorResponse(NotFound("endpoint not found: " + id)));
  auto body = ParseFiniteJson(c.req.body);
  if (!body.ok()) return c.Send(ErrorResponse(body.status()));
  if (Status b = CheckBundle(*s.blobs, *body); !b.ok()) return c.Send(ErrorResponse(b));
  auto d = Deferred(c.resp);
  auto updated = s.endpoints->Update(id, *body, d.durable);
  if (!updated.ok()) return c.Send(ErrorResponse(updated.status()));
  *d.reply = JsonResponse(200, updated->ToJson());
}

// A worker started by hand: registered, and answered once its record is durable (a restart
// must still know its key), with the environment and command to start it with.
void RegisterWorker(const Services& s, Call& c, const scheduling::EndpointSpec& spec) {
  auto d = Deferred(c.resp);
  auto reg = s.workers->Register(spec.id, d.durable);
  if (!reg.ok()) return c.Send(ErrorResponse(reg.status()));
  json::object o{{"workerId", reg->first.id},
                 {"endpointId", spec.id},
                 {"env", StringMapJson(s.worker_env->Build(spec, reg->first, reg->second))}};
  json::array cmd;
  for (const auto& a : spec.worker.command) cmd.emplace_back(a);
  o["command"] = std::move(cmd);
  o["workdir"] = spec.worker.workdir;
  *d.reply = JsonResponse(201, o);
}

// A handler of an existing {endpoint}: 404 otherwise.
RouteHandler OfEndpoint(const Services* s,
                        void (*fn)(const Services&, Call&, const scheduling::EndpointSpec&)) {
  return [s, fn](Call& c) {
    const std::string& id = c.param("endpoint");
    const scheduling::EndpointSpec* spec = s->endpoints->Get(id);
    if (!spec) return c.Send(ErrorResponse(NotFound("endpoint not found: " + id)));
    fn(*s, c, *spec);
  };
}

void AddEndpointRoutes(const Services* s, RouteTable* t) {
  t->Add("GET", "/v1/endpoints", Access::kRead, "every endpoint's spec", [s](Call& c) {
    json::array list;
    for (const auto* e : s->endpoints->List()) list.push_back(e->ToJson());
    c.Send(JsonResponse(200, json::object{{"endpoints", std::move(list)}}));
  });
  t->Add("POST", "/v1/endpoints", Access::kDeploy, "create an endpoint from a spec",
         [s](Call& c) { CreateEndpoint(*s, c); });
  t->Add("GET", "/v1/endpoints/{endpoint}", Access::kRead,
         "an endpoint with its workers, job counts, health and image pulls",
         OfEndpoint(s, [](const Services& s, Call& c, const scheduling::EndpointSpec& spec) {
           c.Send(JsonResponse(200, EndpointJson(s, spec)));
         }));
  for (const char* method : {"PATCH", "PUT", "POST"}) {
    t->Add(method, "/v1/endpoints/{endpoint}", Access::kDeploy,
           "change an endpoint: the given fields; a new version when anything changed",
           [s](Call& c) { UpdateEndpoint(*s, c); });
  }
  t->Add("DELETE", "/v1/endpoints/{endpoint}", Access::kDeploy,
         "delete an endpoint, its queued jobs and its workers",
         OfEndpoint(s, [](const Services& s, Call& c, const scheduling::EndpointSpec& spec) {
           std::string id = spec.id;  // `spec` goes with the endpoint
           s.workers->RemoveEndpoint(id);
           Status st = s.endpoints->Delete(
               id, AfterDurable(c.resp, OkResponse("{\"deleted\":" + JsonQuote(id) + "}")));
           if (!st.ok()) c.Send(ErrorResponse(st));
         }));
  t->Add("POST", "/v1/endpoints/{endpoint}/workers", Access::kDeploy,
         "register a worker started by hand: its env and command", OfEndpoint(s, RegisterWorker));
  t->Add("GET", "/v1/endpoints/{endpoint}/workers", Access::kRead, "an endpoint's workers",
         OfEndpoint(s, [](const Services& s, Call& c, const scheduling::EndpointSpec& spec) {
           c.Send(JsonResponse(200, json::object{{"workers", WorkersJson(s, spec.id)}}));
         }));
}

// {"name", "scope", "endpoints": [...], "node"}: scope defaults to invoke (the least a key is
// made for: calling endpoints); admin keys are made on purpose.
Result<std::pair<std::string, Grant>> ParseKeyRequest(std::string_view text) {
  std::pair<std::string, Grant> out{"key", Grant{}};
  if (text.empty()) return out;
  auto body = ParseJson(text);
  if (!body.ok()) return body.status();
  if (!body->is_object()) return InvalidArgument("body must be an object");
  const json::object& o = body->as_object();
  for (const auto& kv : o) {
    const std::string_view k = kv.key();
    if (k != "name" && k != "scope" && k != "endpoints" && k != "node") {
      return InvalidArgument("unknown field: " + std::string(k));
    }
  }
  if (const auto* n = Find(o, "name")) {
    if (!n->is_string()) return InvalidArgument("name must be a string");
    out.first = std::string(n->as_string());
  }
  if (const auto* sc = Find(o, "scope")) {
    auto scope = sc->is_string() ? ParseScope(std::string_view(sc->as_string())) : std::nullopt;
    if (!scope) return InvalidArgument("scope must be one of admin, deploy, invoke, read, node");
    out.second.scope = *scope;
  }
  if (const auto* e = Find(o, "endpoints")) {
    if (!e->is_array()) return InvalidArgument("endpoints must be a list of endpoint ids");
    for (const auto& ep : e->as_array()) {
      if (!ep.is_string()) return InvalidArgument("endpoints must be a list of endpoint ids");
      out.second.endpoints.emplace_back(ep.as_string());
    }
  }
  if (const auto* n = Find(o, "node")) {
    if (!n->is_string()) return InvalidArgument("node must be a node id");
    out.second.node_id = std::string(n->as_string());
  }
  return out;
}

void CreateKey(const Services& s, Call& c) {
  auto request = ParseKeyRequest(c.req.body);
  if (!request.ok()) return c.Send(ErrorResponse(request.status()));
  if (Status g = CheckGrant(request->second); !g.ok()) return c.Send(ErrorResponse(g));
  auto d = Deferred(c.resp);
  auto created = s.keys->Create(request->first, request->second, d.durable);  // grant checked
  json::object o = KeyJson(created->first);
  o["key"] = created->second;
  *d.reply = JsonResponse(201, std::move(o));
}

void AddKeyRoutes(const Services* s, RouteTable* t) {
  t->Add("GET", "/v1/keys", Access::kAdmin, "API keys (never their secrets)", [s](Call& c) {
    json::array list;
    for (const auto* k : s->keys->List()) list.push_back(KeyJson(*k));
    c.Send(JsonResponse(200, json::object{{"keys", std::move(list)}}));
  });
  t->Add("POST", "/v1/keys", Access::kAdmin,
         "create a key {\"name\", \"scope\", \"endpoints\", \"node\"}: shown once",
         [s](Call& c) { CreateKey(*s, c); });
  t->Add("DELETE", "/v1/keys/{key}", Access::kAdmin, "revoke a key (not the last admin key)",
         [s](Call& c) {
           const std::string& id = c.param("key");
           Status st = s->keys->Revoke(
               id, AfterDurable(c.resp, OkResponse("{\"revoked\":" + JsonQuote(id) + "}")));
           if (!st.ok()) c.Send(ErrorResponse(st));
         });
}

// ?endpoint=&worker=&job=&after=seq&wait=ms
void QueryLogs(const Services& s, Call& c) {
  const http::Request& req = c.req;
  scheduling::LogQuery q;
  q.endpoint_id = req.param("endpoint").value_or("");
  q.worker_id = req.param("worker").value_or("");
  q.after_seq = atoll(req.param("after").value_or("0").c_str());
  if (auto job_id = req.param("job")) {
    // A job's lines: those its worker logged while it ran (with concurrency > 1, other jobs'
    // lines of the same worker in that window too).
    const jobs::Job* j = s.jobs->Get(*job_id);
    if (!j) return c.Send(ErrorResponse(NotFound("job not found: " + *job_id)));
    if (j->rec.started_ms == 0) {
      return c.Send(JsonResponse(200, json::object{{"lines", json::array{}}}));
    }
    q.worker_id = j->rec.worker_id;
    q.from_ms = j->rec.started_ms;
    // Lines are stamped when the agent reads them (it polls every 50 ms): allow half a second.
    q.to_ms = j->rec.completed_ms ? j->rec.completed_ms + 500 : 0;  // 0 while it runs
  }
  int64_t wait = std::clamp<int64_t>(atoll(req.param("wait").value_or("0").c_str()), 0, 60'000);
  auto send = [resp = c.resp](std::vector<scheduling::LogEntry> entries) {
    json::array lines;
    for (const auto& e : entries) {
      lines.push_back(json::object{{"seq", e.seq},
                                   {"at", e.at_ms},
                                   {"endpointId", e.endpoint_id},
                                   {"workerId", e.worker_id},
                                   {"stderr", e.stderr_stream},
                                   {"text", e.text}});
    }
    resp->Send(JsonResponse(200, json::object{{"lines", std::move(lines)}}));
  };
  if (wait > 0) return s.logs->Wait(q, s.clock->NowMs() + wait, send);
  send(s.logs->Query(q));
}

}  // namespace

void AddManagementRoutes(const Services* s, RouteTable* t) {
  AddEndpointRoutes(s, t);
  t->Add(
      "GET", "/v1/workers", Access::kRead, "workers (?endpoint= for one endpoint's)", [s](Call& c) {
        c.Send(JsonResponse(
            200, json::object{{"workers", WorkersJson(*s, c.req.param("endpoint").value_or(""))}}));
      });
  t->Add(
      "GET", "/v1/usage", Access::kRead,
      "billed seconds and cost by endpoint (?since=ms&endpoint=)", [s](Call& c) {
        int64_t since = atoll(c.req.param("since").value_or("0").c_str());
        c.Send(JsonResponse(200, s->metering->Report(since, c.req.param("endpoint").value_or(""))));
      });
  t->Add("GET", "/v1/logs", Access::kRead,
         "worker log lines (?endpoint=&worker=&job=&after=seq&wait=ms)",
         [s](Call& c) { QueryLogs(*s, c); });
  AddKeyRoutes(s, t);
}

}  // namespace gantry::api
