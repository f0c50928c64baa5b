// The node protocol's server side (DESIGN §2.4, protocol/node_protocol.h): agents register,
// long-poll their assignment, report their status and ship worker logs; operators list nodes.
#include <algorithm>

#include "api/api.h"
#include "api/http_status.h"
#include "protocol/node_protocol.h"

namespace gantry::api {
namespace {

// Decodes the body with `decode`; answers 400 and returns nullopt when it is not one.
template <typename T>
std::optional<T> Body(Call& c, Result<T> (*decode)(const json::value&)) {
  auto v = protocol::DecodeText(c.req.body, decode);
  if (!v.ok()) {
    c.Send(ErrorResponse(v.status()));
    return std::nullopt;
  }
  return std::move(*v);
}

void Register(const Services& s, Call& c) {
  auto inv = Body(c, protocol::DecodeInventory);
  if (!inv) return;
  const std::string& node = c.param("node");
  Status st = s.scheduler->RegisterNode(node, std::move(*inv));
  if (!st.ok()) return c.Send(ErrorResponse(st));
  c.Send(JsonResponse(200, s.scheduler->NodeJson(node)));
}

// ?version=V&wait=ms: answered when the assignment's version differs from V, or after `wait`.
void Assignment(const Services& s, Call& c) {
  int64_t version = atoll(c.req.param("version").value_or("-1").c_str());
  int64_t wait = std::clamp<int64_t>(atoll(c.req.param("wait").value_or("0").c_str()), 0, 60'000);
  std::string node = c.param("node");
  s.scheduler->PollAssignment(
      node, version, wait, [resp = c.resp, node](const protocol::Assignment* a) {
        if (!a) {
          return resp->Send(ErrorResponse(NotFound("node not registered: " + node)));
        }
        resp->Send(JsonResponse(200, protocol::Encode(*a)));
      });
}

void Report(const Services& s, Call& c) {
  auto status = Body(c, protocol::DecodeStatus);
  if (!status) return;
  // The last lines of each worker that exited: the endpoint's health shows a failed start's.
  std::map<std::string, std::vector<std::string>> tails;
  for (const auto& r : status->workers) {
    if (r.state == protocol::WorkerRunState::kExited) {
      tails[r.worker_id] = s.logs->Tail(r.worker_id, 20);
    }
  }
  Status st = s.scheduler->Report(c.param("node"), *status, tails);
  if (!st.ok()) return c.Send(ErrorResponse(st));
  c.Send(OkResponse("{}"));
}

// Lines of workers the server does not know are dropped.
void ShipLogs(const Services& s, Call& c) {
  auto lines = Body(c, protocol::DecodeLogs);
  if (!lines) return;
  std::vector<scheduling::LogEntry> batch;
  for (auto& l : *lines) {
    const scheduling::WorkerInfo* w = s.workers->Get(l.worker_id);
    if (!w) continue;
    scheduling::LogEntry e;
    e.worker_id = std::move(l.worker_id);
    e.endpoint_id = w->endpoint_id;
    e.stderr_stream = l.stderr_stream;
    e.text = std::move(l.text);
    e.at_ms = l.at_ms ? l.at_ms : s.clock->NowMs();
    batch.push_back(std::move(e));
  }
  s.logs->Append(std::move(batch));
  c.Send(OkResponse("{}"));
}

}  // namespace

void AddNodeRoutes(const Services* s, RouteTable* t) {
  t->Add("GET", "/v1/nodes", Access::kRead,
         "nodes: inventory, liveness, templates, start counters, image pulls", [s](Call& c) {
           json::array list;
           for (const auto& id : s->scheduler->NodeIds())
             list.push_back(s->scheduler->NodeJson(id));
           c.Send(JsonResponse(200, json::object{{"nodes", std::move(list)}}));
         });
  t->Add("GET", "/v1/nodes/{node}", Access::kRead, "one node, as listed", [s](Call& c) {
    json::object o = s->scheduler->NodeJson(c.param("node"));
    if (o.empty()) return c.Send(ErrorResponse(NotFound("no node " + c.param("node"))));
    c.Send(JsonResponse(200, o));
  });
  t->Add("POST", "/v1/nodes/{node}", Access::kNode, "register (or re-register) a node",
         [s](Call& c) { Register(*s, c); });
  t->Add("GET", "/v1/nodes/{node}/assignment", Access::kNode,
         "long-poll the node's assignment (?version=V&wait=ms)",
         [s](Call& c) { Assignment(*s, c); });
  t->Add("POST", "/v1/nodes/{node}/status", Access::kNode,
         "the agent's workers, bundles, templates and image pulls",
         [s](Call& c) { Report(*s, c); });
  t->Add("POST", "/v1/nodes/{node}/logs", Access::kNode, "worker output lines",
         [s](Call& c) { ShipLogs(*s, c); });
}

}  // namespace gantry::api
