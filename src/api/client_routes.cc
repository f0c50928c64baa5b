// RunPod's client routes (runpod-protocol.md §1): submit jobs, read and control them, an
// endpoint's health.
#include <algorithm>
#include <optional>
#include <string>

#include "api/api.h"
#include "api/http_status.h"
#include "api/json_views.h"

namespace gantry::api {
namespace {

std::string StatusObject(const std::string& id, const char* status) {
  return "{\"id\":\"" + id + "\",\"status\":\"" + status + "\"}";
}

// The policy of a /run body, checked field by field.
Status ParsePolicy(const json::value& p, jobs::SubmitRequest* sr) {
  if (!p.is_object()) return InvalidArgument("policy must be an object");
  const auto& po = p.as_object();
  for (const auto& kv : po) {
    if (kv.key() != "executionTimeout" && kv.key() != "ttl" && kv.key() != "lowPriority") {
      return InvalidArgument("unknown policy field: " + std::string(kv.key()));
    }
  }
  if (const auto* et = Find(po, "executionTimeout")) {
    auto n = AsInt(*et);
    if (!n) return InvalidArgument("policy.executionTimeout must be an integer (ms)");
    sr->execution_timeout_ms = *n;
  }
  if (const auto* ttl = Find(po, "ttl")) {
    auto n = AsInt(*ttl);
    if (!n) return InvalidArgument("policy.ttl must be an integer (ms)");
    sr->ttl_ms = *n;
  }
  if (const auto* lp = Find(po, "lowPriority")) {
    if (!lp->is_bool()) return InvalidArgument("policy.lowPriority must be a boolean");
    sr->low_priority = lp->get_bool();
  }
  return Status::Ok();
}

// The address `host` names literally ("1.2.3.4", "::1"), or nullopt for a name (which is
// checked when it is resolved, at delivery).
std::optional<std::string> IpLiteral(std::string_view host) {
  if (http::ParseCidr(host).ok()) return std::string(host);
  return std::nullopt;
}

// A /run or /runsync body: {"input", "webhook", "s3Config", "policy"}.
Result<jobs::SubmitRequest> ParseSubmit(const Services& s, const Call& c, bool sync) {
  size_t limit = sync ? s.options.runsync_body_limit : s.options.run_body_limit;
  if (c.req.body.size() > limit) {
    return Status(Code::kPayloadTooLarge,
                  "request body exceeds " + std::to_string(limit) + " bytes");
  }
  auto body = ObjectBody(c.req);
  if (!body.ok()) return body.status();
  const json::object& o = *body;
  const json::value* input = Find(o, "input");
  if (!input) return InvalidArgument("missing \"input\"");
  // A job whose input could not be written back as JSON must not be queued (1e400 parses as
  // infinity).
  GANTRY_RETURN_IF_ERROR(CheckFinite(*input, "input"));
  jobs::SubmitRequest sr;
  sr.endpoint_id = c.param("endpoint");
  sr.sync = sync;
  sr.input = ToJson(*input);
  if (const auto* w = Find(o, "webhook"); w && !w->is_null()) {
    if (!w->is_string()) return InvalidArgument("webhook must be a string");
    sr.webhook = std::string(w->as_string());
    if (!sr.webhook.empty()) {
      auto url = http::ParseUrl(sr.webhook);
      if (!url.ok()) return InvalidArgument("webhook: " + url.status().message());
      const auto ip = IpLiteral(url->host);
      if (s.options.webhook_policy && ip) {
        if (Status st = s.options.webhook_policy->Check(*ip); !st.ok()) {
          return InvalidArgument("webhook: " + st.message() +
                                 "; the server sends webhooks to public addresses only (an "
                                 "operator can allow others with --webhook-allow)");
        }
      }
    }
  }
  if (const auto* s3 = Find(o, "s3Config"); s3 && !s3->is_null()) {
    GANTRY_RETURN_IF_ERROR(CheckFinite(*s3, "s3Config"));
    sr.s3_config = ToJson(*s3);
  }
  if (const auto* p = Find(o, "policy"); p && !p->is_null()) {
    GANTRY_RETURN_IF_ERROR(ParsePolicy(*p, &sr));
  }
  return sr;
}

// /runsync's and /status-sync's ?wait=, clamped to 1 s .. 300 s; the default when absent.
Result<int64_t> SyncWait(const Services& s, const http::Request& req) {
  auto w = req.param("wait");
  if (!w) return s.options.runsync_default_wait_ms;
  char* end = nullptr;
  long long v = strtoll(w->c_str(), &end, 10);
  if (w->empty() || *end != '\0') return InvalidArgument("wait must be an integer (ms)");
  return std::clamp<int64_t>(v, 1'000, 300'000);
}

// /run answers once the job is durable.
void Run(const Services& s, Call& c) {
  auto sr = ParseSubmit(s, c, false);
  if (!sr.ok()) return c.Send(ErrorResponse(sr.status()));
  auto d = Deferred(c.resp);
  auto job = s.jobs->Submit(std::move(*sr), d.durable);
  if (!job.ok()) return c.Send(ErrorResponse(job.status()));
  *d.reply = OkResponse(StatusObject((*job)->rec.id, "IN_QUEUE"));
}

// /runsync answers with the result, or with the job's id once `wait` passes.
void Runsync(const Services& s, Call& c) {
  auto sr = ParseSubmit(s, c, true);
  if (!sr.ok()) return c.Send(ErrorResponse(sr.status()));
  auto wait_ms = SyncWait(s, c.req);
  if (!wait_ms.ok()) return c.Send(ErrorResponse(wait_ms.status()));
  // No live node could ever run it: the job stays queued for a node that joins later, and the
  // caller hears why within a second instead of after the whole wait. (With no live node at
  // all, it waits: an agent may be registering.)
  std::string unplaceable = s.scheduler->Unplaceable(c.param("endpoint"), true);
  int64_t wait = unplaceable.empty() ? *wait_ms : std::min<int64_t>(*wait_ms, 1'000);
  auto job = s.jobs->Submit(std::move(*sr), {});
  if (!job.ok()) return c.Send(ErrorResponse(job.status()));
  std::string id = (*job)->rec.id;
  s.jobs->WaitForJob(id, wait, [resp = c.resp, id, s = &s, unplaceable](const jobs::Job* j) {
    if (!j) return resp->Send(ErrorResponse(NotFound("job expired: " + id)));
    if (jobs::IsTerminal(j->status)) {
      return resp->Send(OkResponse(jobs::StatusJson(*j, s->clock->NowMs())));
    }
    // The caller gets the id of a job that goes on: like /run's, it is durable first.
    std::string reply = StatusObject(id, jobs::StatusName(j->status));
    if (!unplaceable.empty()) {
      reply.insert(reply.size() - 1, ",\"reason\":" + JsonQuote(unplaceable));
    }
    s->jobs->MakeDurable(id, AfterDurable(resp, OkResponse(std::move(reply))));
  });
}

// {"status", "stream": [{"output": chunk}, ...]}
std::string StreamJson(const std::vector<std::string>& chunks, jobs::JobStatus status) {
  std::string out = "{\"status\":\"";
  out += jobs::StatusName(status);
  out += "\",\"stream\":[";
  for (size_t i = 0; i < chunks.size(); ++i) {
    if (i) out += ',';
    out += "{\"output\":" + chunks[i] + "}";
  }
  out += "]}";
  return out;
}

// A job as /requests lists it: its id, status and times, not its input or output.
json::object RequestJson(const jobs::Job& j, int64_t now_ms) {
  const jobs::JobTimes times = jobs::TimesOf(j, now_ms);
  auto at = [](int64_t ms) { return ms > 0 ? json::value(ms) : json::value(nullptr); };
  json::object o{{"id", j.rec.id},
                 {"status", jobs::StatusName(j.status)},
                 {"createdAt", j.rec.created_ms},
                 {"startedAt", at(j.rec.started_ms)},
                 {"completedAt", at(j.rec.completed_ms)},
                 {"delayTime", times.delay_ms},
                 {"executionTime", times.execution_ms}};
  o["workerId"] = j.rec.worker_id.empty() ? json::value(nullptr) : json::value(j.rec.worker_id);
  return o;
}

// /status-sync: /status once the job has ended or `wait` has passed.
void StatusSync(const Services& s, Call& c, const jobs::Job& job) {
  auto wait_ms = SyncWait(s, c.req);
  if (!wait_ms.ok()) return c.Send(ErrorResponse(wait_ms.status()));
  s.jobs->WaitForJob(job.rec.id, *wait_ms,
                     [resp = c.resp, id = job.rec.id, s = &s](const jobs::Job* j) {
                       if (!j) return resp->Send(ErrorResponse(NotFound("job expired: " + id)));
                       resp->Send(OkResponse(jobs::StatusJson(*j, s->clock->NowMs())));
                     });
}

// The chunks not read yet. While the job runs and none is pending, waits for one (at most
// stream_wait_ms), so that a client asking again at once does not spin.
void Stream(const Services& s, Call& c, const jobs::Job& job) {
  s.jobs->WaitForStream(job.rec.id, s.options.stream_wait_ms,
                        [resp = c.resp, id = job.rec.id, s = &s](const jobs::Job* j) {
                          if (!j) return resp->Send(ErrorResponse(NotFound("job expired: " + id)));
                          resp->Send(OkResponse(StreamJson(s->jobs->DrainStream(id), j->status)));
                        });
}

// The endpoint's requests, newest first: ?limit= (1..100, default 100) and ?cursor= (the
// nextCursor of the page before).
void Requests(const Services& s, Call& c) {
  int64_t limit = 100, before = 0;
  if (auto l = c.req.param("limit")) {
    char* end = nullptr;
    limit = strtoll(l->c_str(), &end, 10);
    if (l->empty() || *end != '\0' || limit < 1 || limit > 100) {
      return c.Send(ErrorResponse(InvalidArgument("limit must be an integer from 1 to 100")));
    }
  }
  if (auto cur = c.req.param("cursor"); cur && !cur->empty()) {
    char* end = nullptr;
    before = strtoll(cur->c_str(), &end, 10);
    if (*end != '\0' || before <= 0) {
      return c.Send(ErrorResponse(InvalidArgument("cursor is not one this server gave")));
    }
  }
  jobs::JobPage page = s.jobs->RecentJobs(c.param("endpoint"), limit, before);
  const int64_t now = s.clock->NowMs();
  json::array list;
  for (const jobs::Job* j : page.jobs) list.push_back(RequestJson(*j, now));
  json::object o{{"requests", std::move(list)}};
  o["nextCursor"] = page.next ? json::value(std::to_string(page.next)) : json::value(nullptr);
  c.Send(JsonResponse(200, o));
}

// The route's {endpoint}, or null after answering 404.
const scheduling::EndpointSpec* RequireEndpoint(const Services& s, Call& c) {
  const std::string& ep = c.param("endpoint");
  const scheduling::EndpointSpec* spec = s.endpoints->Get(ep);
  if (!spec) c.Send(ErrorResponse(NotFound("endpoint not found: " + ep)));
  return spec;
}

// A handler of an endpoint's route: 404 unless {endpoint} exists.
RouteHandler OfEndpoint(const Services* s, void (*fn)(const Services&, Call&)) {
  return [s, fn](Call& c) {
    if (RequireEndpoint(*s, c)) fn(*s, c);
  };
}

// A handler of a job's route: 404 unless {endpoint} exists and {job} is one of its jobs.
RouteHandler OfJob(const Services* s, void (*fn)(const Services&, Call&, const jobs::Job&)) {
  return [s, fn](Call& c) {
    if (!RequireEndpoint(*s, c)) return;
    const std::string& id = c.param("job");
    const jobs::Job* job = s->jobs->Get(id);
    if (!job || job->rec.endpoint_id != c.param("endpoint")) {
      return c.Send(ErrorResponse(NotFound("job not found: " + id)));
    }
    fn(*s, c, *job);
  };
}

// The reply to a change of job `id` that is answered once durable: its id and status then
// (`gone` if it was deleted meanwhile), or 503 if the write failed.
std::function<void(Status)> StatusWhenDurable(const Services& s, Call& c, const std::string& id,
                                              const char* gone) {
  DeferredReply d = Deferred(c.resp);
  return [&s, d, id, gone](Status st) {
    const jobs::Job* now = s.jobs->Get(id);
    *d.reply = OkResponse(StatusObject(id, now ? jobs::StatusName(now->status) : gone));
    d.durable(std::move(st));
  };
}

}  // namespace

void AddClientRoutes(const Services* s, RouteTable* t) {
  t->Add("POST", "/v2/{endpoint}/run", Access::kInvoke, "submit a job; answered once it is durable",
         OfEndpoint(s, Run));
  t->Add("POST", "/v2/{endpoint}/runsync", Access::kInvoke,
         "submit a job and wait (?wait=ms) for its result", OfEndpoint(s, Runsync));
  for (const char* method : {"GET", "POST"}) {
    t->Add(method, "/v2/{endpoint}/status/{job}", Access::kInvoke, "a job's status and output",
           OfJob(s, [](const Services& s, Call& c, const jobs::Job& j) {
             c.Send(OkResponse(jobs::StatusJson(j, s.clock->NowMs())));
           }));
    t->Add(method, "/v2/{endpoint}/stream/{job}", Access::kInvoke,
           "the stream chunks of a job not read yet (waits up to a second for one)",
           OfJob(s, Stream));
    t->Add(method, "/v2/{endpoint}/status-sync/{job}", Access::kInvoke,
           "a job's status once it has ended or ?wait=ms has passed", OfJob(s, StatusSync));
  }
  t->Add("GET", "/v2/{endpoint}/requests", Access::kInvoke,
         "the endpoint's recent requests, newest first (?limit=&cursor=)", OfEndpoint(s, Requests));
  t->Add("POST", "/v2/{endpoint}/cancel/{job}", Access::kInvoke, "cancel a job",
         OfJob(s, [](const Services& s, Call& c, const jobs::Job& j) {
           // Answered once the cancel is durable, with the job's status then (a result
           // written first wins).
           auto r = s.jobs->Cancel(j.rec.id, StatusWhenDurable(s, c, j.rec.id, "CANCELLED"));
           if (!r.ok()) return c.Send(ErrorResponse(r.status()));
         }));
  t->Add("POST", "/v2/{endpoint}/retry/{job}", Access::kInvoke,
         "queue a FAILED or TIMED_OUT job again",
         OfJob(s, [](const Services& s, Call& c, const jobs::Job& j) {
           std::string id = j.rec.id;  // `j` may move when it is queued again
           // Answered IN_QUEUE (as RunPod does) once the retry is durable, though a waiting
           // worker may have taken it by then.
           auto r =
               s.jobs->Retry(id, AfterDurable(c.resp, OkResponse(StatusObject(id, "IN_QUEUE"))));
           if (!r.ok()) return c.Send(ErrorResponse(r.status()));
         }));
  t->Add("POST", "/v2/{endpoint}/purge-queue", Access::kInvoke, "drop the endpoint's queued jobs",
         OfEndpoint(s, [](const Services& s, Call& c) {
           auto n = s.jobs->PurgeQueue(c.param("endpoint"));
           if (!n.ok()) return c.Send(ErrorResponse(n.status()));
           c.Send(OkResponse("{\"removed\":" + std::to_string(*n) + ",\"status\":\"completed\"}"));
         }));
  t->Add("GET", "/v2/{endpoint}/health", Access::kInvoke, "the endpoint's job and worker counts",
         OfEndpoint(s, [](const Services& s, Call& c) {
           c.Send(JsonResponse(200, HealthJson(s, c.param("endpoint"))));
         }));
}

}  // namespace gantry::api
