#include "api/api_server.h"

#include "common/log.h"
#include "scheduling/placement.h"

namespace gantry::api {

using http::Response;

int HttpStatusFor(Code code) {
  switch (code) {
    case Code::kOk:
      return 200;
    case Code::kInvalidArgument:
      return 400;
    case Code::kNotFound:
      return 404;
    case Code::kAlreadyExists:
      return 409;
    case Code::kFailedPrecondition:
      return 409;
    case Code::kResourceExhausted:
      return 429;
    case Code::kPayloadTooLarge:
      return 413;
    case Code::kUnauthenticated:
      return 401;
    case Code::kPermissionDenied:
      return 403;
    case Code::kUnavailable:
      return 503;
    case Code::kDeadlineExceeded:
      return 504;
    case Code::kInternal:
      return 500;
  }
  return 500;
}

Response ErrorResponse(const Status& status) {
  return Response{HttpStatusFor(status.code()),
                  R"({"error":{"code":")" + std::string(CodeName(status.code())) +
                      R"(","message":)" + JsonQuote(status.message()) + "}}"};
}

namespace {

Response Json(int status, const json::value& v) { return Response{status, ToJson(v)}; }
Response Ok(std::string body) { return Response{200, std::move(body)}; }

std::vector<std::string> Split(std::string_view path) {
  std::vector<std::string> out;
  while (!path.empty()) {
    if (path.front() == '/') {
      path.remove_prefix(1);
      continue;
    }
    size_t slash = path.find('/');
    out.push_back(http::PercentDecode(path.substr(0, slash)));
    if (slash == std::string_view::npos) break;
    path.remove_prefix(slash);
  }
  return out;
}

// Runs `send` once the store confirms, or answers 503 if it failed.
// A durable-callback whose reply is filled in after the call that queued the write returns
// (the reply names what that call created). Answers 503 if the store failed.
// Requires a store whose completions are posted, never run inline.
struct DeferredReply {
  std::shared_ptr<Response> reply = std::make_shared<Response>();
  std::function<void(Status)> durable;
};
DeferredReply Deferred(std::shared_ptr<http::Responder> resp) {
  DeferredReply d;
  d.durable = [resp, reply = d.reply](Status st) {
    if (st.ok())
      resp->Send(std::move(*reply));
    else
      resp->Send(ErrorResponse(Unavailable("could not persist: " + st.message())));
  };
  return d;
}

// Sends `ok` once the store confirms.
std::function<void(Status)> AfterDurable(std::shared_ptr<http::Responder> resp, Response ok) {
  DeferredReply d = Deferred(std::move(resp));
  *d.reply = std::move(ok);
  return d.durable;
}

Response NoRoute(const http::Request& req) {
  return ErrorResponse(NotFound("no such route: " + req.method + " " + std::string(req.path())));
}

std::string StatusObject(const std::string& id, const char* status) {
  return "{\"id\":\"" + id + "\",\"status\":\"" + status + "\"}";
}

json::object JobCountsJson(const jobs::EndpointCounts& jc) {
  return json::object{{"completed", jc.completed},
                      {"failed", jc.failed},
                      {"inProgress", jc.in_progress},
                      {"inQueue", jc.in_queue},
                      {"retried", jc.retried}};
}

json::object WorkerJson(const scheduling::WorkerInfo& w, const jobs::JobManager& jm) {
  json::object o;
  o["id"] = w.id;
  o["endpointId"] = w.endpoint_id;
  o["state"] = w.draining && w.state != scheduling::WorkerState::kStopped
                   ? "DRAINING"
                   : scheduling::WorkerStateName(w.state);
  o["createdAt"] = w.created_ms;
  o["lastSeenAt"] = w.last_seen_ms;
  o["readyAt"] = w.ready_ms;
  if (!w.node_id.empty()) {
    scheduling::AddPlacementJson(w, &o);
    o["startPath"] = w.start_path;
    if (!w.start_note.empty()) o["startNote"] = w.start_note;
    // The cold-start breakdown, ms from placement: agent received, process spawned, ready.
    auto phase = [&](int64_t t) { return t > 0 ? json::value(t - w.placed_ms) : json::value(); };
    o["coldStart"] = json::object{{"placedAt", w.placed_ms},
                                  {"receivedMs", phase(w.received_ms)},
                                  {"spawnedMs", phase(w.spawned_ms)},
                                  {"readyMs", phase(w.ready_ms)}};
  }
  json::array held;
  for (const auto& id : jm.HeldBy(w.id)) held.emplace_back(id);
  o["jobs"] = std::move(held);
  if (!w.last_error.empty()) o["lastError"] = w.last_error;
  return o;
}

}  // namespace

ApiServer::ApiServer(const Clock* clock, jobs::JobManager* jobs,
                     scheduling::EndpointRegistry* endpoints, scheduling::WorkerRegistry* workers,
                     scheduling::Scheduler* scheduler, scheduling::LogStore* logs,
                     scheduling::Metering* metering, store::BlobStore* blobs, KeyRing* keys,
                     ApiOptions options)
    : clock_(clock),
      jobs_(jobs),
      endpoints_(endpoints),
      workers_(workers),
      scheduler_(scheduler),
      logs_(logs),
      metering_(metering),
      blobs_(blobs),
      keys_(keys),
      options_(std::move(options)) {}

json::object ApiServer::HealthJson(const std::string& ep) {
  auto wc = workers_->Counts(ep);
  const scheduling::EndpointHealth& h = scheduler_->Health(ep);
  // Failed starts count as unhealthy workers; workers wanted but placed nowhere as throttled.
  json::object workers{{"idle", wc.idle},
                       {"initializing", wc.initializing},
                       {"ready", wc.ready},
                       {"running", wc.running},
                       {"throttled", wc.throttled + h.throttled},
                       {"unhealthy", wc.unhealthy + h.consecutive_failures}};
  json::object o{{"jobs", JobCountsJson(jobs_->Counts(ep))}, {"workers", std::move(workers)}};
  o["status"] = h.unhealthy ? "unhealthy" : "healthy";  // Gantry's own, beyond RunPod's keys
  if (!h.last_error.empty()) o["lastError"] = h.last_error;
  return o;
}

void ApiServer::Handle(http::Request&& req, Resp resp) {
  auto seg = Split(req.path());
  if (seg.size() == 1 && seg[0] == "healthz") return resp->Send(Ok(R"({"status":"ok"})"));
  // Worker routes authenticate with the worker's own secret.
  if (seg.size() >= 4 && seg[0] == "v2") {
    const std::string& action = seg[2];
    if (action == "job-take" || action == "job-take-batch" || action == "job-stop" ||
        action == "job-done" || action == "job-stream" || action == "ping") {
      return Worker(req, seg[1], action, seg[3], seg.size() > 4 ? seg[4] : "", resp);
    }
  }
  if (!keys_->Check(req.header("authorization"))) {
    return resp->Send(ErrorResponse(Unauthenticated(
        req.header("authorization").empty() ? "missing API key" : "invalid API key")));
  }
  if (seg.size() >= 3 && seg[0] == "v2") {
    return Client(req, seg[1], seg[2], seg.size() > 3 ? seg[3] : "", resp);
  }
  if (!seg.empty() && seg[0] == "v1") return Management(req, seg, resp);
  resp->Send(NoRoute(req));
}

// ---- Client routes ---------------------------------------------------------------------------

void ApiServer::Submit(http::Request& req, const std::string& ep, bool sync, Resp resp) {
  size_t limit = sync ? options_.runsync_body_limit : options_.run_body_limit;
  if (req.body.size() > limit) {
    return resp->Send(ErrorResponse(Status(
        Code::kPayloadTooLarge, "request body exceeds " + std::to_string(limit) + " bytes")));
  }
  auto body = ParseJson(req.body);
  if (!body.ok()) return resp->Send(ErrorResponse(body.status()));
  if (!body->is_object())
    return resp->Send(ErrorResponse(InvalidArgument("body must be a JSON object")));
  const auto& o = body->as_object();
  const json::value* input = Find(o, "input");
  if (!input) return resp->Send(ErrorResponse(InvalidArgument("missing \"input\"")));
  jobs::SubmitRequest sr;
  sr.endpoint_id = ep;
  sr.sync = sync;
  sr.input = ToJson(*input);
  if (const auto* w = Find(o, "webhook"); w && !w->is_null()) {
    if (!w->is_string())
      return resp->Send(ErrorResponse(InvalidArgument("webhook must be a string")));
    sr.webhook = std::string(w->as_string());
    if (!sr.webhook.empty()) {
      auto url = http::ParseUrl(sr.webhook);
      if (!url.ok())
        return resp->Send(ErrorResponse(InvalidArgument("webhook: " + url.status().message())));
    }
  }
  if (const auto* s3 = Find(o, "s3Config"); s3 && !s3->is_null()) sr.s3_config = ToJson(*s3);
  if (const auto* p = Find(o, "policy"); p && !p->is_null()) {
    if (!p->is_object())
      return resp->Send(ErrorResponse(InvalidArgument("policy must be an object")));
    const auto& po = p->as_object();
    for (const auto& kv : po) {
      if (kv.key() != "executionTimeout" && kv.key() != "ttl" && kv.key() != "lowPriority") {
        return resp->Send(
            ErrorResponse(InvalidArgument("unknown policy field: " + std::string(kv.key()))));
      }
    }
    if (const auto* et = Find(po, "executionTimeout")) {
      auto n = AsInt(*et);
      if (!n)
        return resp->Send(
            ErrorResponse(InvalidArgument("policy.executionTimeout must be an integer (ms)")));
      sr.execution_timeout_ms = *n;
    }
    if (const auto* ttl = Find(po, "ttl")) {
      auto n = AsInt(*ttl);
      if (!n)
        return resp->Send(ErrorResponse(InvalidArgument("policy.ttl must be an integer (ms)")));
      sr.ttl_ms = *n;
    }
    if (const auto* lp = Find(po, "lowPriority")) {
      if (!lp->is_bool())
        return resp->Send(ErrorResponse(InvalidArgument("policy.lowPriority must be a boolean")));
      sr.low_priority = lp->get_bool();
    }
  }
  int64_t wait_ms = options_.runsync_default_wait_ms;
  if (sync) {
    if (auto w = req.param("wait")) {
      char* end = nullptr;
      long long v = strtoll(w->c_str(), &end, 10);
      if (w->empty() || *end != '\0')
        return resp->Send(ErrorResponse(InvalidArgument("wait must be an integer (ms)")));
      wait_ms = std::clamp<int64_t>(v, 1'000, 300'000);
    }
  }
  if (!sync) {  // /run answers once the job is durable
    auto d = Deferred(resp);
    auto job = jobs_->Submit(std::move(sr), d.durable);
    if (!job.ok()) return resp->Send(ErrorResponse(job.status()));
    *d.reply = Ok(StatusObject((*job)->rec.id, "IN_QUEUE"));
    return;
  }
  auto job = jobs_->Submit(std::move(sr), {});
  if (!job.ok()) return resp->Send(ErrorResponse(job.status()));
  std::string id = (*job)->rec.id;
  const Clock* clock = clock_;
  jobs::JobManager* jm = jobs_;
  jobs_->WaitForJob(id, wait_ms, [resp, id, clock, jm](const jobs::Job* j) {
    if (!j) return resp->Send(ErrorResponse(NotFound("job expired: " + id)));
    if (jobs::IsTerminal(j->status)) return resp->Send(Ok(jobs::StatusJson(*j, clock->NowMs())));
    // The caller gets the id of a job that goes on: like /run's, it is durable first.
    std::string reply = StatusObject(id, jobs::StatusName(j->status));
    jm->MakeDurable(id, AfterDurable(resp, Ok(std::move(reply))));
  });
}

void ApiServer::Client(http::Request& req, const std::string& ep, const std::string& action,
                       const std::string& arg, Resp resp) {
  if (!endpoints_->Get(ep)) return resp->Send(ErrorResponse(NotFound("endpoint not found: " + ep)));
  const bool post = req.method == "POST";
  if (action == "run" && post && arg.empty()) return Submit(req, ep, false, resp);
  if (action == "runsync" && post && arg.empty()) return Submit(req, ep, true, resp);
  if (action == "health" && req.method == "GET") return resp->Send(Json(200, HealthJson(ep)));
  if (action == "purge-queue" && post) {
    auto n = jobs_->PurgeQueue(ep);
    if (!n.ok()) return resp->Send(ErrorResponse(n.status()));
    return resp->Send(Ok("{\"removed\":" + std::to_string(*n) + ",\"status\":\"completed\"}"));
  }
  if (arg.empty()) {
    return resp->Send(NoRoute(req));
  }
  const jobs::Job* job = jobs_->Get(arg);
  if (!job || job->rec.endpoint_id != ep) {
    return resp->Send(ErrorResponse(NotFound("job not found: " + arg)));
  }
  if (action == "status" && (req.method == "GET" || post)) {
    return resp->Send(Ok(jobs::StatusJson(*job, clock_->NowMs())));
  }
  if (action == "stream" && (req.method == "GET" || post)) {
    auto chunks = jobs_->DrainStream(arg);
    std::string out = "{\"status\":\"";
    out += jobs::StatusName(job->status);
    out += "\",\"stream\":[";
    for (size_t i = 0; i < chunks.size(); ++i) {
      if (i) out += ',';
      out += "{\"output\":" + chunks[i] + "}";
    }
    out += "]}";
    return resp->Send(Ok(std::move(out)));
  }
  if (action == "cancel" && post) {
    auto j = jobs_->Cancel(arg);
    if (!j.ok()) return resp->Send(ErrorResponse(j.status()));
    return resp->Send(Ok(StatusObject(arg, jobs::StatusName((*j)->status))));
  }
  if (action == "retry" && post) {
    auto j = jobs_->Retry(arg);
    if (!j.ok()) return resp->Send(ErrorResponse(j.status()));
    return resp->Send(Ok(StatusObject(arg, "IN_QUEUE")));
  }
  resp->Send(NoRoute(req));
}

// ---- Worker routes ---------------------------------------------------------------------------

static void AppendJob(std::string& out, const jobs::Job& j) {
  out += "{\"id\":\"";
  out += j.rec.id;
  out += "\",\"input\":";
  out += j.rec.input;
  if (!j.rec.webhook.empty()) out += ",\"webhook\":" + JsonQuote(j.rec.webhook);
  if (!j.rec.s3_config.empty()) out += ",\"s3Config\":" + j.rec.s3_config;
  out += ",\"policy\":{\"executionTimeout\":" + std::to_string(j.rec.execution_timeout_ms) +
         ",\"ttl\":" + std::to_string(j.rec.ttl_ms) +
         ",\"lowPriority\":" + (j.rec.low_priority ? "true" : "false") + "}}";
}

void ApiServer::SendJobs(const std::string& worker_id, std::vector<const jobs::Job*> js, bool batch,
                         Resp resp) {
  if (js.empty()) return resp->Send(Response{204, ""});
  std::string out;
  std::vector<std::string> ids;
  if (batch) out += '[';
  for (size_t i = 0; i < js.size(); ++i) {
    if (i) out += ',';
    AppendJob(out, *js[i]);
    ids.push_back(js[i]->rec.id);
  }
  if (batch) out += ']';
  jobs::JobManager* jm = jobs_;
  resp->Send(Ok(std::move(out)), [jm, worker_id, ids = std::move(ids)](bool written) {
    if (!written) {
      GLOG_WARN("api: worker %s went away before its jobs reached it; requeueing",
                worker_id.c_str());
      jm->ReturnUndelivered(worker_id, ids);
    }
  });
}

void ApiServer::Worker(http::Request& req, const std::string& ep, const std::string& action,
                       const std::string& worker_id, const std::string& arg, Resp resp) {
  auto auth =
      workers_->Authenticate(ep, worker_id, std::string(BearerToken(req.header("authorization"))));
  if (!auth.ok()) return resp->Send(ErrorResponse(auth.status()));
  scheduling::WorkerInfo* w = *auth;
  if (action == "job-take" || action == "job-take-batch") {
    workers_->Seen(w, true);
    if (w->draining) return resp->Send(Response{204, ""});  // it is being stopped
    int max = 1;
    bool batch = action == "job-take-batch";
    if (batch) {
      auto bs = req.param("batch_size");
      max = bs ? std::clamp(atoi(bs->c_str()), 1, 1000) : 1;
    }
    std::string wid = w->id;
    jobs_->Take(ep, wid, max, options_.take_wait_ms,
                [this, wid, batch, resp](std::vector<const jobs::Job*> js) {
                  // A job submitted before its worker was even placed waited for a cold start.
                  const scheduling::WorkerInfo* w = workers_->Get(wid);
                  for (const jobs::Job* j : js) {
                    if (w && w->placed_ms > 0 && w->placed_ms >= j->rec.created_ms) {
                      jobs_->MarkColdStart(j->rec.id, wid, w->ready_ms - j->rec.created_ms);
                    }
                  }
                  SendJobs(wid, std::move(js), batch, resp);
                });
    return;
  }
  if (action == "job-stop") {
    workers_->Seen(w, false);
    jobs_->PollStops(w->id, options_.stop_wait_ms, [resp](std::vector<std::string> ids) {
      if (ids.empty()) return resp->Send(Response{204, ""});
      json::array a;
      for (auto& id : ids) a.emplace_back(id);
      resp->Send(Json(200, json::object{{"jobsToStop", std::move(a)}}));
    });
    return;
  }
  if (action == "ping") {
    std::vector<std::string> running;
    if (auto ids = req.param("job_id")) {
      std::string_view s = *ids;
      while (!s.empty()) {
        size_t comma = s.find(',');
        if (comma != 0) running.emplace_back(s.substr(0, comma));
        if (comma == std::string_view::npos) break;
        s.remove_prefix(comma + 1);
      }
    }
    workers_->Ping(w, running);
    return resp->Send(Ok("{}"));
  }
  workers_->Seen(w, false);
  if (arg.empty() || req.method != "POST") {
    return resp->Send(NoRoute(req));
  }
  // Bodies are JSON whatever the Content-Type says (RunPod's SDK sends form-urlencoded).
  auto body = ParseJson(req.body);
  if (!body.ok()) return resp->Send(ErrorResponse(body.status()));
  if (action == "job-stream") {
    if (!body->is_object() || !Find(body->as_object(), "output")) {
      return resp->Send(
          ErrorResponse(InvalidArgument("job-stream body must be {\"output\": ...}")));
    }
    Status st = jobs_->AppendStream(w->id, arg, ToJson(*Find(body->as_object(), "output")));
    if (!st.ok()) return resp->Send(ErrorResponse(st));
    return resp->Send(Ok("{}"));
  }
  if (action == "job-done") {
    bool is_stream = req.param("isStream").value_or("") == "true";
    auto out = jobs_->Finish(w->id, arg, *body, is_stream, AfterDurable(resp, Ok("{}")));
    if (!out.ok()) return resp->Send(ErrorResponse(out.status()));
    if (out->stop_worker) workers_->MarkRecycle(w->id);
    return;
  }
  resp->Send(NoRoute(req));
}

// ---- Management API --------------------------------------------------------------------------

std::map<std::string, std::string> ApiServer::WorkerEnv(const scheduling::EndpointSpec& spec,
                                                        const scheduling::WorkerInfo& worker,
                                                        const std::string& secret) const {
  const std::string& wid = worker.id;
  std::string gpu = !worker.gpu_type.empty()    ? worker.gpu_type
                    : spec.gpu_type_ids.empty() ? "cpu"
                                                : spec.gpu_type_ids.front();
  std::string base = options_.public_url + "/v2/" + spec.id;
  std::map<std::string, std::string> env;
  for (const auto& [k, v] : spec.env) env[k] = v;
  for (const auto& [k, v] : spec.worker.env) env[k] = v;
  env["RUNPOD_POD_ID"] = wid;
  env["RUNPOD_AI_API_KEY"] = secret;
  env["RUNPOD_ENDPOINT_ID"] = spec.id;
  env["RUNPOD_WEBHOOK_GET_JOB"] = base + "/job-take/" + wid + "?gpu=" + gpu;
  env["RUNPOD_WEBHOOK_POST_OUTPUT"] = base + "/job-done/" + wid + "/$ID?gpu=" + gpu;
  env["RUNPOD_WEBHOOK_POST_STREAM"] = base + "/job-stream/" + wid + "/$ID?gpu=" + gpu;
  env["RUNPOD_WEBHOOK_PING"] = base + "/ping/" + wid;
  env["RUNPOD_WEBHOOK_JOB_STOP"] = base + "/job-stop/" + wid + "?gpu=" + gpu;
  env["RUNPOD_PING_INTERVAL"] = std::to_string(workers_->options().ping_interval_ms);
  env["RUNPOD_SKIP_AUTO_SYSTEM_CHECKS"] = "true";
  env["RUNPOD_CONCURRENCY"] = std::to_string(spec.concurrency);
  env["RUNPOD_GPU_COUNT"] = std::to_string(worker.gpus.size());
  return env;
}

void ApiServer::Management(http::Request& req, const std::vector<std::string>& seg, Resp resp) {
  const std::string& m = req.method;
  auto not_found = [&] { resp->Send(NoRoute(req)); };
  if (seg.size() < 2) return not_found();
  const std::string& kind = seg[1];
  if (kind == "endpoints") {
    if (seg.size() == 2 && m == "GET") {
      json::array list;
      for (const auto* s : endpoints_->List()) list.push_back(s->ToJson());
      return resp->Send(Json(200, json::object{{"endpoints", std::move(list)}}));
    }
    if (seg.size() == 2 && m == "POST") {
      auto body = ParseJson(req.body);
      if (!body.ok()) return resp->Send(ErrorResponse(body.status()));
      if (Status b = CheckBundle(*body); !b.ok()) return resp->Send(ErrorResponse(b));
      auto d = Deferred(resp);
      auto spec = endpoints_->Create(*body, d.durable);
      if (!spec.ok()) return resp->Send(ErrorResponse(spec.status()));
      *d.reply = Json(201, spec->ToJson());
      return;
    }
    if (seg.size() < 3) return not_found();
    const std::string& id = seg[2];
    const scheduling::EndpointSpec* spec = endpoints_->Get(id);
    if (!spec) return resp->Send(ErrorResponse(NotFound("endpoint not found: " + id)));
    if (seg.size() == 3 && m == "GET") {
      json::object o = spec->ToJson();
      json::array ws;
      for (const auto* w : workers_->List(id)) ws.push_back(WorkerJson(*w, *jobs_));
      o["workers"] = std::move(ws);
      o["jobs"] = JobCountsJson(jobs_->Counts(id));
      json::object health = HealthJson(id);
      const auto& h = scheduler_->Health(id);
      json::array tail;
      for (const auto& l : h.last_log) tail.emplace_back(l);
      health["lastLog"] = std::move(tail);
      o["health"] = std::move(health);
      if (!spec->image.empty()) o["imagePulls"] = scheduler_->ImagePulls(spec->image);
      return resp->Send(Json(200, o));
    }
    if (seg.size() == 3 && (m == "PATCH" || m == "PUT" || m == "POST")) {
      auto body = ParseJson(req.body);
      if (!body.ok()) return resp->Send(ErrorResponse(body.status()));
      if (Status b = CheckBundle(*body); !b.ok()) return resp->Send(ErrorResponse(b));
      auto d = Deferred(resp);
      auto updated = endpoints_->Update(id, *body, d.durable);
      if (!updated.ok()) return resp->Send(ErrorResponse(updated.status()));
      *d.reply = Json(200, updated->ToJson());
      return;
    }
    if (seg.size() == 3 && m == "DELETE") {
      workers_->RemoveEndpoint(id);
      Status st =
          endpoints_->Delete(id, AfterDurable(resp, Ok("{\"deleted\":" + JsonQuote(id) + "}")));
      if (!st.ok()) return resp->Send(ErrorResponse(st));
      return;
    }
    if (seg.size() == 4 && seg[3] == "workers" && m == "POST") {
      // Answered once the worker's record is durable: a restart must still know its key.
      auto d = Deferred(resp);
      auto reg = workers_->Register(id, d.durable);
      if (!reg.ok()) return resp->Send(ErrorResponse(reg.status()));
      json::object o{{"workerId", reg->first.id},
                     {"endpointId", id},
                     {"env", StringMapJson(WorkerEnv(*spec, reg->first, reg->second))}};
      json::array cmd;
      for (const auto& a : spec->worker.command) cmd.emplace_back(a);
      o["command"] = std::move(cmd);
      o["workdir"] = spec->worker.workdir;
      *d.reply = Json(201, o);
      return;
    }
    if (seg.size() == 4 && seg[3] == "workers" && m == "GET") {
      json::array ws;
      for (const auto* w : workers_->List(id)) ws.push_back(WorkerJson(*w, *jobs_));
      return resp->Send(Json(200, json::object{{"workers", std::move(ws)}}));
    }
    return not_found();
  }
  if (kind == "nodes") return Nodes(req, seg, resp);
  if (kind == "blobs" || kind == "bundles") return Blobs(req, seg, resp);
  if (kind == "logs" && seg.size() == 2 && m == "GET") return Logs(req, resp);
  if (kind == "usage" && seg.size() == 2 && m == "GET") {
    int64_t since = atoll(req.param("since").value_or("0").c_str());
    return resp->Send(Json(200, metering_->Report(since, req.param("endpoint").value_or(""))));
  }
  if (kind == "workers" && seg.size() == 2 && m == "GET") {
    json::array ws;
    for (const auto* w : workers_->List(req.param("endpoint").value_or(""))) {
      ws.push_back(WorkerJson(*w, *jobs_));
    }
    return resp->Send(Json(200, json::object{{"workers", std::move(ws)}}));
  }
  if (kind == "keys") {
    if (seg.size() == 2 && m == "GET") {
      json::array list;
      for (const auto* k : keys_->List()) {
        list.push_back(json::object{
            {"id", k->id}, {"name", k->name}, {"prefix", k->prefix}, {"createdAt", k->created_ms}});
      }
      return resp->Send(Json(200, json::object{{"keys", std::move(list)}}));
    }
    if (seg.size() == 2 && m == "POST") {
      std::string name = "key";
      if (!req.body.empty()) {
        auto body = ParseJson(req.body);
        if (!body.ok()) return resp->Send(ErrorResponse(body.status()));
        if (!body->is_object())
          return resp->Send(ErrorResponse(InvalidArgument("body must be an object")));
        if (const auto* n = Find(body->as_object(), "name")) {
          if (!n->is_string())
            return resp->Send(ErrorResponse(InvalidArgument("name must be a string")));
          name = std::string(n->as_string());
        }
      }
      auto d = Deferred(resp);
      auto created = keys_->Create(name, d.durable);
      *d.reply = Json(201, json::object{{"id", created.first.id},
                                        {"name", created.first.name},
                                        {"key", created.second},
                                        {"createdAt", created.first.created_ms}});
      return;
    }
    if (seg.size() == 3 && m == "DELETE") {
      Status st =
          keys_->Revoke(seg[2], AfterDurable(resp, Ok("{\"revoked\":" + JsonQuote(seg[2]) + "}")));
      if (!st.ok()) return resp->Send(ErrorResponse(st));
      return;
    }
    return not_found();
  }
  not_found();
}

// ---- Node protocol (agents) -----------------------------------------------------------------

// How the agent reaches an image (the fields of a worker or of an image to prefetch), added to
// `o`. The agent's ParseImageAccess() reads them back.
static void AddImageAccessJson(const scheduling::ImageAccess& a, json::object* o) {
  (*o)["image"] = a.image;
  (*o)["registryAuth"] =
      json::object{{"username", a.registry_username}, {"password", a.registry_password}};
  (*o)["insecureRegistry"] = a.insecure_registry;
}

static json::object AssignmentJson(const scheduling::Assignment& a) {
  json::array ws;
  for (const auto& w : a.workers) {
    json::array cmd, gpus;
    for (const auto& x : w.command) cmd.emplace_back(x);
    for (int g : w.gpus) gpus.emplace_back(g);
    json::object wo{{"workerId", w.worker_id},
                    {"endpointId", w.endpoint_id},
                    {"endpointVersion", w.endpoint_version},
                    {"command", std::move(cmd)},
                    {"workdir", w.workdir},
                    {"bundle", w.bundle},
                    {"env", StringMapJson(w.env)},
                    {"gpuType", w.gpu_type},
                    {"gpus", std::move(gpus)},
                    {"cpu", w.cpu},
                    {"memoryMb", w.memory_mb},
                    {"flashboot", w.use_template},
                    {"volume", w.volume},
                    {"volumeMountPath", w.volume_mount_path},
                    {"readOnlyRootfs", w.read_only_rootfs}};
    AddImageAccessJson(w, &wo);
    ws.push_back(std::move(wo));
  }
  json::object versions;
  for (const auto& [id, v] : a.template_versions) versions[id] = v;
  json::array images;
  for (const auto& i : a.images) {
    json::object o{{"generation", i.generation}};
    AddImageAccessJson(i, &o);
    images.push_back(std::move(o));
  }
  return json::object{{"version", a.version},
                      {"workers", std::move(ws)},
                      {"templateVersions", versions},
                      {"images", std::move(images)}};
}

void ApiServer::Nodes(http::Request& req, const std::vector<std::string>& seg, Resp resp) {
  const std::string& m = req.method;
  if (seg.size() == 2 && m == "GET") {
    json::array list;
    for (const auto& id : scheduler_->NodeIds()) list.push_back(scheduler_->NodeJson(id));
    return resp->Send(Json(200, json::object{{"nodes", std::move(list)}}));
  }
  if (seg.size() < 3) return resp->Send(NoRoute(req));
  const std::string& node = seg[2];
  if (seg.size() == 3 && m == "GET") {
    json::object o = scheduler_->NodeJson(node);
    if (o.empty()) return resp->Send(ErrorResponse(NotFound("no node " + node)));
    return resp->Send(Json(200, o));
  }
  json::value body;
  if (m == "POST") {
    auto parsed = ParseJson(req.body);
    if (!parsed.ok()) return resp->Send(ErrorResponse(parsed.status()));
    if (!parsed->is_object()) {
      return resp->Send(ErrorResponse(InvalidArgument("body must be a JSON object")));
    }
    body = std::move(*parsed);
  }
  if (seg.size() == 3 && m == "POST") {  // register
    const auto& o = body.as_object();
    scheduling::NodeInventory inv;
    if (auto* n = Find(o, "name"); n && n->is_string()) inv.name = n->as_string();
    if (auto* c = Find(o, "cpuCores"); c && c->is_number()) inv.cpu_cores = c->to_number<double>();
    if (auto* mm = Find(o, "memoryMb")) inv.memory_mb = AsInt(*mm).value_or(0);
    if (auto* g = Find(o, "gpus"); g && g->is_array()) {
      for (const auto& x : g->as_array()) {
        if (!x.is_object()) continue;
        scheduling::GpuDevice d;
        if (auto* i = Find(x.as_object(), "index"))
          d.index = static_cast<int>(AsInt(*i).value_or(0));
        if (auto* t = Find(x.as_object(), "type"); t && t->is_string()) d.type = t->as_string();
        if (auto* u = Find(x.as_object(), "uuid"); u && u->is_string()) d.uuid = u->as_string();
        inv.gpus.push_back(std::move(d));
      }
    }
    Status st = scheduler_->RegisterNode(node, std::move(inv));
    if (!st.ok()) return resp->Send(ErrorResponse(st));
    return resp->Send(Json(200, scheduler_->NodeJson(node)));
  }
  if (seg.size() == 4 && seg[3] == "assignment" && m == "GET") {
    int64_t version = atoll(req.param("version").value_or("-1").c_str());
    int64_t wait = std::clamp<int64_t>(atoll(req.param("wait").value_or("0").c_str()), 0, 60'000);
    scheduler_->PollAssignment(node, version, wait, [resp, node](const scheduling::Assignment* a) {
      if (!a) return resp->Send(ErrorResponse(NotFound("node not registered: " + node)));
      resp->Send(Json(200, AssignmentJson(*a)));
    });
    return;
  }
  if (seg.size() == 4 && seg[3] == "status" && m == "POST") {
    const auto& o = body.as_object();
    std::vector<scheduling::WorkerReport> reports;
    std::map<std::string, std::vector<std::string>> tails;
    if (auto* ws = Find(o, "workers"); ws && ws->is_array()) {
      for (const auto& x : ws->as_array()) {
        if (!x.is_object()) continue;
        const auto& wo = x.as_object();
        scheduling::WorkerReport r;
        if (auto* v = Find(wo, "workerId"); v && v->is_string()) r.worker_id = v->as_string();
        if (auto* v = Find(wo, "state"); v && v->is_string()) r.state = v->as_string();
        if (auto* v = Find(wo, "receivedAt")) r.received_ms = AsInt(*v).value_or(0);
        if (auto* v = Find(wo, "spawnedAt")) r.spawned_ms = AsInt(*v).value_or(0);
        if (auto* v = Find(wo, "exitCode")) r.exit_code = static_cast<int>(AsInt(*v).value_or(0));
        if (auto* v = Find(wo, "error"); v && v->is_string()) r.error = v->as_string();
        if (auto* v = Find(wo, "startPath"); v && v->is_string()) r.start_path = v->as_string();
        if (auto* v = Find(wo, "startNote"); v && v->is_string()) r.start_note = v->as_string();
        if (r.state == "exited") tails[r.worker_id] = logs_->Tail(r.worker_id, 20);
        reports.push_back(std::move(r));
      }
    }
    std::set<std::string> cached;
    if (auto* bs = Find(o, "bundles"); bs && bs->is_array()) {
      for (const auto& b : bs->as_array()) {
        if (b.is_string()) cached.insert(std::string(b.as_string()));
      }
    }
    // Templates and snapshots: placement prefers the nodes that hold them.
    if (auto* ts = Find(o, "templates"); ts && ts->is_array()) {
      for (const auto& x : ts->as_array()) {
        if (!x.is_object()) continue;
        const auto& to = x.as_object();
        auto* ep = Find(to, "endpointId");
        auto* ver = Find(to, "version");
        if (!ep || !ep->is_string() || !ver || !AsInt(*ver)) continue;
        const std::string id(ep->as_string());
        if (auto* st = Find(to, "state"); st && st->is_string() && st->as_string() == "ready") {
          cached.insert(scheduling::TemplateCacheKey(id, *AsInt(*ver)));
        }
        if (auto* sn = Find(to, "snapshot"); sn && sn->is_bool() && sn->get_bool()) {
          cached.insert(scheduling::SnapshotCacheKey(id, *AsInt(*ver)));
        }
      }
    }
    json::object agent_status;
    for (const char* k : {"templates", "startCounters", "images"}) {
      if (auto* v = Find(o, k)) agent_status[k] = *v;
    }
    Status st = scheduler_->Report(node, reports, tails, cached, std::move(agent_status));
    if (!st.ok()) return resp->Send(ErrorResponse(st));
    return resp->Send(Ok("{}"));
  }
  if (seg.size() == 4 && seg[3] == "logs" && m == "POST") {
    const auto& o = body.as_object();
    std::vector<scheduling::LogEntry> batch;
    if (auto* lines = Find(o, "lines"); lines && lines->is_array()) {
      for (const auto& x : lines->as_array()) {
        if (!x.is_object()) continue;
        const auto& lo = x.as_object();
        scheduling::LogEntry e;
        if (auto* v = Find(lo, "workerId"); v && v->is_string()) e.worker_id = v->as_string();
        if (auto* v = Find(lo, "text"); v && v->is_string()) e.text = v->as_string();
        if (auto* v = Find(lo, "stderr"); v && v->is_bool()) e.stderr_stream = v->get_bool();
        if (auto* v = Find(lo, "at")) e.at_ms = AsInt(*v).value_or(clock_->NowMs());
        const scheduling::WorkerInfo* w = workers_->Get(e.worker_id);
        if (!w) continue;
        e.endpoint_id = w->endpoint_id;
        batch.push_back(std::move(e));
      }
    }
    logs_->Append(std::move(batch));
    return resp->Send(Ok("{}"));
  }
  resp->Send(NoRoute(req));
}

void ApiServer::Logs(http::Request& req, Resp resp) {
  scheduling::LogQuery q;
  q.endpoint_id = req.param("endpoint").value_or("");
  q.worker_id = req.param("worker").value_or("");
  q.after_seq = atoll(req.param("after").value_or("0").c_str());
  if (auto job_id = req.param("job")) {
    // A job's lines: those its worker logged while it ran (with concurrency > 1, other jobs'
    // lines of the same worker in that window too).
    const jobs::Job* j = jobs_->Get(*job_id);
    if (!j) return resp->Send(ErrorResponse(NotFound("job not found: " + *job_id)));
    if (j->rec.started_ms == 0)
      return resp->Send(Json(200, json::object{{"lines", json::array{}}}));
    q.worker_id = j->rec.worker_id;
    q.from_ms = j->rec.started_ms;
    // Lines are stamped when the agent reads them (it polls every 50 ms): allow half a second.
    q.to_ms = j->rec.completed_ms ? j->rec.completed_ms + 500 : 0;  // 0 while it runs
  }
  int64_t wait = std::clamp<int64_t>(atoll(req.param("wait").value_or("0").c_str()), 0, 60'000);
  auto send = [resp](std::vector<scheduling::LogEntry> entries) {
    json::array lines;
    for (const auto& e : entries) {
      lines.push_back(json::object{{"seq", e.seq},
                                   {"at", e.at_ms},
                                   {"endpointId", e.endpoint_id},
                                   {"workerId", e.worker_id},
                                   {"stderr", e.stderr_stream},
                                   {"text", e.text}});
    }
    resp->Send(Json(200, json::object{{"lines", std::move(lines)}}));
  };
  if (wait > 0) return logs_->Wait(q, clock_->NowMs() + wait, send);
  send(logs_->Query(q));
}

// ---- Blobs and bundles (gantry deploy) -------------------------------------------------------

Status ApiServer::CheckBundle(const json::value& spec) const {
  if (!spec.is_object()) return Status::Ok();  // ApplySpecPatch reports that
  const json::value* b = Find(spec.as_object(), "bundle");
  if (!b || !b->is_string() || b->as_string().empty()) return Status::Ok();
  std::string digest(b->as_string());
  if (!store::ValidDigest(digest)) return InvalidArgument("bundle is not a SHA-256 digest");
  if (!blobs_->Has(digest)) return NotFound("bundle not uploaded: " + digest);
  return Status::Ok();
}

// A bundle manifest: {"files": [{"path", "digest", "mode"}]}, paths relative and inside the
// bundle. Returns the canonical text (files sorted by path) whose SHA-256 names the bundle.
static Result<std::string> CanonicalManifest(const json::value& body) {
  if (!body.is_object()) return InvalidArgument("a bundle is {\"files\": [...]}");
  const json::value* files = Find(body.as_object(), "files");
  if (!files || !files->is_array()) return InvalidArgument("a bundle is {\"files\": [...]}");
  std::map<std::string, json::object> sorted;
  for (const auto& f : files->as_array()) {
    if (!f.is_object()) return InvalidArgument("each file is {\"path\", \"digest\", \"mode\"}");
    const auto& o = f.as_object();
    const json::value* path = Find(o, "path");
    const json::value* digest = Find(o, "digest");
    if (!path || !path->is_string() || !digest || !digest->is_string()) {
      return InvalidArgument("each file needs a path and a digest");
    }
    std::string p(path->as_string());
    if (p.empty() || p[0] == '/' || p.find("..") != std::string::npos ||
        p.find('\\') != std::string::npos) {
      return InvalidArgument("bad path in bundle: " + p);
    }
    if (!store::ValidDigest(std::string(digest->as_string()))) {
      return InvalidArgument("bad digest for " + p);
    }
    int64_t mode = 0644;
    if (const json::value* m = Find(o, "mode")) mode = AsInt(*m).value_or(0644) & 0777;
    sorted[p] = json::object{{"path", p}, {"digest", digest->as_string()}, {"mode", mode}};
  }
  json::array out;
  for (auto& [p, o] : sorted) out.push_back(std::move(o));
  return ToJson(json::object{{"files", std::move(out)}});
}

void ApiServer::Blobs(http::Request& req, const std::vector<std::string>& seg, Resp resp) {
  const std::string& m = req.method;
  const bool bundles = seg[1] == "bundles";
  if (!bundles && seg.size() == 3 && seg[2] == "missing" && m == "POST") {
    auto body = ParseJson(req.body);
    if (!body.ok()) return resp->Send(ErrorResponse(body.status()));
    const json::value* ds = body->is_object() ? Find(body->as_object(), "digests") : nullptr;
    if (!ds || !ds->is_array()) {
      return resp->Send(ErrorResponse(InvalidArgument("body is {\"digests\": [...]}")));
    }
    json::array missing;
    for (const auto& d : ds->as_array()) {
      if (d.is_string() && !blobs_->Has(std::string(d.as_string()))) missing.push_back(d);
    }
    return resp->Send(Json(200, json::object{{"missing", std::move(missing)}}));
  }
  if (!bundles && seg.size() == 3 && m == "PUT") {
    Status st = blobs_->Put(seg[2], req.body);
    if (!st.ok()) return resp->Send(ErrorResponse(st));
    return resp->Send(Json(201, json::object{{"digest", seg[2]}}));
  }
  if (seg.size() == 3 && m == "GET") {
    auto data = blobs_->Get(seg[2]);
    if (!data.ok()) return resp->Send(ErrorResponse(data.status()));
    return resp->Send(
        Response{200, std::move(*data), bundles ? "application/json" : "application/octet-stream"});
  }
  if (bundles && seg.size() == 2 && m == "POST") {
    auto body = ParseJson(req.body);
    if (!body.ok()) return resp->Send(ErrorResponse(body.status()));
    auto manifest = CanonicalManifest(*body);
    if (!manifest.ok()) return resp->Send(ErrorResponse(manifest.status()));
    json::array missing;
    json::value parsed = *ParseJson(*manifest);
    for (const auto& f : parsed.as_object().at("files").as_array()) {
      const auto& d = f.as_object().at("digest");
      if (!blobs_->Has(std::string(d.as_string()))) missing.push_back(d);
    }
    if (!missing.empty()) {
      return resp->Send(
          ErrorResponse(FailedPrecondition("upload the bundle's files first: " + ToJson(missing))));
    }
    std::string digest = Sha256Hex(*manifest);
    Status st = blobs_->Put(digest, *manifest);
    if (!st.ok()) return resp->Send(ErrorResponse(st));
    return resp->Send(Json(201, json::object{{"digest", digest}}));
  }
  resp->Send(NoRoute(req));
}

}  // namespace gantry::api
