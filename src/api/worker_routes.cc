// RunPod's worker routes (runpod-protocol.md §2): a worker takes jobs, reports results, stream
// chunks and heartbeats, and learns which of its jobs to stop. Each authenticates with the
// worker's own secret (Access::kWorker), so call.worker is set.
#include <algorithm>

#include "api/api.h"
#include "api/http_status.h"
#include "common/log.h"

namespace gantry::api {
namespace {

void AppendJob(std::string& out, const jobs::Job& j) {
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

// Sends the taken jobs (204 when none); jobs the worker never got go back to the queue.
void SendJobs(const Services& s, const std::string& worker_id, std::vector<const jobs::Job*> js,
              bool batch, const std::shared_ptr<http::Responder>& resp) {
  if (js.empty()) return resp->Send(http::Response{204, ""});
  std::string out;
  std::vector<std::string> ids;
  if (batch) out += '[';
  for (size_t i = 0; i < js.size(); ++i) {
    if (i) out += ',';
    AppendJob(out, *js[i]);
    ids.push_back(js[i]->rec.id);
  }
  if (batch) out += ']';
  resp->Send(OkResponse(std::move(out)),
             [jm = s.jobs, worker_id, ids = std::move(ids)](bool written) {
               if (!written) {
                 GLOG_WARN("api: worker %s went away before its jobs reached it; requeueing",
                           worker_id.c_str());
                 jm->ReturnUndelivered(worker_id, ids);
               }
             });
}

// job-take and job-take-batch: a long-poll for up to one job (or batch_size jobs).
void Take(const Services& s, Call& c, bool batch) {
  scheduling::WorkerInfo* w = c.worker;
  s.workers->Seen(w, true);
  if (w->draining) return c.Send(http::Response{204, ""});  // it is being stopped
  int max = 1;
  if (batch) {
    auto bs = c.req.param("batch_size");
    max = bs ? std::clamp(atoi(bs->c_str()), 1, 1000) : 1;
  }
  std::string wid = w->id;
  s.jobs->Take(c.param("endpoint"), wid, max, s.options.take_wait_ms,
               [s = &s, wid, batch, resp = c.resp](std::vector<const jobs::Job*> js) {
                 // A job submitted before its worker was even placed waited for a cold start.
                 const scheduling::WorkerInfo* w = s->workers->Get(wid);
                 for (const jobs::Job* j : js) {
                   if (w && w->placed_ms > 0 && w->placed_ms >= j->rec.created_ms) {
                     s->jobs->MarkColdStart(j->rec.id, wid, w->ready_ms - j->rec.created_ms);
                   }
                 }
                 SendJobs(*s, wid, std::move(js), batch, resp);
               });
}

void PollStops(const Services& s, Call& c) {
  s.workers->Seen(c.worker, false);
  s.jobs->PollStops(c.worker->id, s.options.stop_wait_ms,
                    [resp = c.resp](std::vector<std::string> ids) {
                      if (ids.empty()) return resp->Send(http::Response{204, ""});
                      json::array a;
                      for (auto& id : ids) a.emplace_back(id);
                      resp->Send(JsonResponse(200, json::object{{"jobsToStop", std::move(a)}}));
                    });
}

// ?job_id=a,b: the jobs the worker runs now.
void Ping(const Services& s, Call& c) {
  std::vector<std::string> running;
  if (auto ids = c.req.param("job_id")) {
    std::string_view rest = *ids;
    while (!rest.empty()) {
      size_t comma = rest.find(',');
      if (comma != 0) running.emplace_back(rest.substr(0, comma));
      if (comma == std::string_view::npos) break;
      rest.remove_prefix(comma + 1);
    }
  }
  s.workers->Ping(c.worker, running);
  c.Send(OkResponse("{}"));
}

// job-stream and job-done bodies are JSON whatever the Content-Type says (RunPod's SDK sends
// form-urlencoded); a number JSON cannot hold is refused with its path (`output.x[2] is not a
// finite number: ...`), so that the worker can tell its user which value it was.
void StreamChunk(const Services& s, Call& c) {
  s.workers->Seen(c.worker, false);
  auto body = ParseFiniteJson(c.req.body);
  if (!body.ok()) return c.Send(ErrorResponse(body.status()));
  if (!body->is_object() || !Find(body->as_object(), "output")) {
    return c.Send(ErrorResponse(InvalidArgument("job-stream body must be {\"output\": ...}")));
  }
  Status st = s.jobs->AppendStream(c.worker->id, c.param("job"),
                                   ToJson(*Find(body->as_object(), "output")));
  if (!st.ok()) return c.Send(ErrorResponse(st));
  c.Send(OkResponse("{}"));
}

// Idempotent; answered once the result is durable.
void Done(const Services& s, Call& c) {
  s.workers->Seen(c.worker, false);
  auto body = ParseFiniteJson(c.req.body);
  if (!body.ok()) return c.Send(ErrorResponse(body.status()));
  bool is_stream = c.req.param("isStream").value_or("") == "true";
  auto out = s.jobs->Finish(c.worker->id, c.param("job"), *body, is_stream,
                            AfterDurable(c.resp, OkResponse("{}")));
  if (!out.ok()) return c.Send(ErrorResponse(out.status()));
  if (out->stop_worker) s.workers->MarkRecycle(c.worker->id);
}

}  // namespace

void AddWorkerRoutes(const Services* s, RouteTable* t) {
  // RunPod's workers GET these; POST is taken too, as it always was.
  for (const char* method : {"GET", "POST"}) {
    t->Add(method, "/v2/{endpoint}/job-take/{worker}", Access::kWorker,
           "long-poll for a job (204 when none came)", [s](Call& c) { Take(*s, c, false); });
    t->Add(method, "/v2/{endpoint}/job-take-batch/{worker}", Access::kWorker,
           "long-poll for up to ?batch_size= jobs", [s](Call& c) { Take(*s, c, true); });
    t->Add(method, "/v2/{endpoint}/job-stop/{worker}", Access::kWorker,
           "long-poll for the jobs this worker should stop", [s](Call& c) { PollStops(*s, c); });
    t->Add(method, "/v2/{endpoint}/ping/{worker}", Access::kWorker,
           "heartbeat with ?job_id= the jobs it runs", [s](Call& c) { Ping(*s, c); });
  }
  t->Add("POST", "/v2/{endpoint}/job-stream/{worker}/{job}", Access::kWorker,
         "a stream chunk of a job: {\"output\": ...}", [s](Call& c) { StreamChunk(*s, c); });
  t->Add("POST", "/v2/{endpoint}/job-done/{worker}/{job}", Access::kWorker,
         "a job's result or error (?isStream=true for a generator)", [s](Call& c) { Done(*s, c); });
}

}  // namespace gantry::api
