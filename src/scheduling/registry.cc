#include "scheduling/registry.h"

#include "common/log.h"

namespace gantry::scheduling {

// ---- EndpointRegistry ------------------------------------------------------------------------

EndpointRegistry::EndpointRegistry(const Clock* clock, store::Store* store, jobs::JobManager* jobs)
    : clock_(clock), store_(store), jobs_(jobs) {}

Status EndpointRegistry::Load() {
  auto objs = store_->LoadObjects("endpoint");
  if (!objs.ok()) return objs.status();
  for (const auto& o : *objs) {
    auto v = ParseJson(o.data);
    EndpointSpec spec;
    if (!v.ok() || !ApplySpecPatch(*v, &spec).ok()) {
      GLOG_ERROR("store: endpoint %s has an unreadable spec; skipped", o.id.c_str());
      continue;
    }
    const auto& obj = v->as_object();
    spec.id = o.id;
    if (auto* c = Find(obj, "createdAt")) spec.created_ms = AsInt(*c).value_or(0);
    if (auto* u = Find(obj, "updatedAt")) spec.updated_ms = AsInt(*u).value_or(0);
    if (auto* n = Find(obj, "version")) spec.version = AsInt(*n).value_or(1);
    jobs_->SetEndpoint(spec.id, spec.ToQueueConfig());
    endpoints_[spec.id] = std::move(spec);
  }
  return Status::Ok();
}

void EndpointRegistry::Save(const EndpointSpec& spec, std::function<void(Status)> durable) {
  store_->Write({store::Mutation::PutObject(
                    {"endpoint", spec.id, ToJson(spec.ToJson(/*with_secrets=*/true))})},
                std::move(durable));
}

Result<EndpointSpec> EndpointRegistry::Create(const json::value& body,
                                              std::function<void(Status)> durable) {
  EndpointSpec spec;
  GANTRY_RETURN_IF_ERROR(ApplySpecPatch(body, &spec));
  if (const auto* id = Find(body.as_object(), "id")) {
    if (!id->is_string() || !ValidEndpointId(std::string(id->as_string()))) {
      return InvalidArgument("id must be 1-64 characters of letters, digits, '-' and '_'");
    }
    spec.id = std::string(id->as_string());
  } else {
    spec.id = NewId("", 14);
  }
  if (endpoints_.count(spec.id)) return AlreadyExists("endpoint already exists: " + spec.id);
  if (spec.name.empty()) spec.name = spec.id;
  spec.created_ms = spec.updated_ms = clock_->NowMs();
  // Applied now, taken back if the write fails (UndoOnFailure).
  jobs_->SetEndpoint(spec.id, spec.ToQueueConfig());
  endpoints_[spec.id] = spec;
  Changed(spec.id);
  Save(spec, store::UndoOnFailure(
                 [this, id = spec.id, made = spec.created_ms] {
                   auto it = endpoints_.find(id);
                   if (it == endpoints_.end() || it->second.created_ms != made ||
                       it->second.version != 1) {
                     return;  // deleted or changed since: those writes decide
                   }
                   jobs_->RemoveEndpoint(id);
                   endpoints_.erase(it);
                   Changed(id);
                 },
                 std::move(durable)));
  return spec;
}

Result<EndpointSpec> EndpointRegistry::Update(const std::string& id, const json::value& patch,
                                              std::function<void(Status)> durable) {
  auto it = endpoints_.find(id);
  if (it == endpoints_.end()) return NotFound("endpoint not found: " + id);
  EndpointSpec spec = it->second;
  GANTRY_RETURN_IF_ERROR(ApplySpecPatch(patch, &spec));
  if (const auto* pid = Find(patch.as_object(), "id"); pid && *pid != json::value(id)) {
    return InvalidArgument("id cannot be changed");
  }
  // An update that changes nothing (a deploy of the same bundle) makes no new version.
  if (ToJson(spec.ToJson(true)) == ToJson(it->second.ToJson(true))) {
    store_->Write({}, std::move(durable));  // completes in order, like any write
    return spec;
  }
  spec.updated_ms = clock_->NowMs();
  spec.version += 1;
  EndpointSpec previous = std::move(it->second);
  jobs_->SetEndpoint(id, spec.ToQueueConfig());
  it->second = spec;
  Changed(id);
  Save(spec, store::UndoOnFailure(
                 [this, previous = std::move(previous), version = spec.version] {
                   auto it = endpoints_.find(previous.id);
                   if (it == endpoints_.end() || it->second.version != version) return;
                   jobs_->SetEndpoint(previous.id, previous.ToQueueConfig());
                   it->second = previous;
                   Changed(previous.id);
                 },
                 std::move(durable)));
  return spec;
}

Status EndpointRegistry::Delete(const std::string& id, std::function<void(Status)> durable) {
  auto it = endpoints_.find(id);
  if (it == endpoints_.end()) return NotFound("endpoint not found: " + id);
  const std::string key = id;  // `id` may be the entry's own
  EndpointSpec removed = std::move(it->second);
  jobs_->RemoveEndpoint(key);
  endpoints_.erase(it);
  Changed(key);
  // Taken back if the delete fails (its queued jobs are not: they were ended with it).
  store_->Write({store::Mutation::DeleteObject("endpoint", key)},
                store::UndoOnFailure(
                    [this, removed = std::move(removed)] {
                      if (endpoints_.count(removed.id)) return;  // made again since
                      jobs_->SetEndpoint(removed.id, removed.ToQueueConfig());
                      endpoints_[removed.id] = removed;
                      Changed(removed.id);
                    },
                    std::move(durable)));
  return Status::Ok();
}

void EndpointRegistry::Changed(const std::string& id) {
  for (EndpointObserver* o : observers_) o->OnEndpointChanged(id);
}

const EndpointSpec* EndpointRegistry::Get(const std::string& id) const {
  auto it = endpoints_.find(id);
  return it == endpoints_.end() ? nullptr : &it->second;
}

std::vector<const EndpointSpec*> EndpointRegistry::List() const {
  std::vector<const EndpointSpec*> out;
  for (const auto& [id, spec] : endpoints_) out.push_back(&spec);
  return out;
}

// ---- WorkerRegistry --------------------------------------------------------------------------

const char* WorkerStateName(WorkerState s) {
  switch (s) {
    case WorkerState::kInitializing:
      return "INITIALIZING";
    case WorkerState::kReady:
      return "READY";
    case WorkerState::kUnhealthy:
      return "UNHEALTHY";
    case WorkerState::kStopped:
      return "STOPPED";
  }
  return "UNKNOWN";
}

WorkerRegistry::WorkerRegistry(const Clock* clock, store::Store* store, jobs::JobManager* jobs,
                               WorkerOptions options)
    : clock_(clock), store_(store), jobs_(jobs), options_(options) {}

void AddPlacementJson(const WorkerInfo& w, json::object* o) {
  (*o)["nodeId"] = w.node_id;
  (*o)["gpuType"] = w.gpu_type;
  json::array g;
  for (int i : w.gpus) g.emplace_back(i);
  (*o)["gpus"] = std::move(g);
  (*o)["endpointVersion"] = w.endpoint_version;
}

static std::string WorkerRecord(const WorkerInfo& w) {
  json::object o;
  o["endpointId"] = w.endpoint_id;
  o["secretHash"] = w.secret_hash;
  o["createdAt"] = w.created_ms;
  if (!w.node_id.empty()) {
    AddPlacementJson(w, &o);
    o["placedAt"] = w.placed_ms;
    o["draining"] = w.draining;
  }
  return ToJson(o);
}

void WorkerRegistry::Save(const WorkerInfo& w) {
  store_->Write({store::Mutation::PutObject({"worker", w.id, WorkerRecord(w)})}, {});
}

WorkerInfo* WorkerRegistry::Get(const std::string& worker_id) {
  auto it = workers_.find(worker_id);
  return it == workers_.end() ? nullptr : &it->second;
}

Status WorkerRegistry::Load() {
  auto objs = store_->LoadObjects("worker");
  if (!objs.ok()) return objs.status();
  int64_t now = clock_->NowMs();
  for (const auto& o : *objs) {
    auto v = ParseJson(o.data);
    if (!v.ok() || !v->is_object()) continue;
    const auto& obj = v->as_object();
    WorkerInfo w;
    w.id = o.id;
    if (auto* e = Find(obj, "endpointId"); e && e->is_string()) w.endpoint_id = e->as_string();
    if (auto* h = Find(obj, "secretHash"); h && h->is_string()) w.secret_hash = h->as_string();
    if (auto* c = Find(obj, "createdAt")) w.created_ms = AsInt(*c).value_or(0);
    if (auto* n = Find(obj, "nodeId"); n && n->is_string()) w.node_id = n->as_string();
    if (auto* g = Find(obj, "gpuType"); g && g->is_string()) w.gpu_type = g->as_string();
    if (auto* g = Find(obj, "gpus"); g && g->is_array()) {
      for (const auto& i : g->as_array()) w.gpus.push_back(static_cast<int>(AsInt(i).value_or(0)));
    }
    if (auto* v = Find(obj, "endpointVersion")) w.endpoint_version = AsInt(*v).value_or(0);
    if (auto* p = Find(obj, "placedAt")) w.placed_ms = AsInt(*p).value_or(0);
    if (auto* d = Find(obj, "draining"); d && d->is_bool()) w.draining = d->get_bool();
    // Every known worker gets a fresh liveness window after a restart of the server; it ran
    // before, so the ping timeout (not the start timeout) applies.
    w.last_seen_ms = w.last_ping_ms = now;
    w.heard_from = true;
    by_hash_[w.secret_hash] = w.id;
    workers_[w.id] = std::move(w);
  }
  return Status::Ok();
}

Result<std::pair<WorkerInfo, std::string>> WorkerRegistry::Register(
    const std::string& endpoint_id, std::function<void(Status)> durable, const WorkerInfo* placed) {
  WorkerInfo w;
  if (placed) w = *placed;
  w.id = NewId("w", 16);
  w.endpoint_id = endpoint_id;
  std::string secret = NewSecret("gw_");
  w.secret_hash = Sha256Hex(secret);
  w.created_ms = w.last_seen_ms = w.last_ping_ms = clock_->NowMs();
  if (placed) w.secret = secret;
  store_->Write({store::Mutation::PutObject({"worker", w.id, WorkerRecord(w)})},
                std::move(durable));
  by_hash_[w.secret_hash] = w.id;
  workers_[w.id] = w;
  return std::make_pair(w, secret);
}

Result<WorkerInfo*> WorkerRegistry::Authenticate(const std::string& endpoint_id,
                                                 const std::string& worker_id,
                                                 const std::string& key) {
  if (key.empty()) return Unauthenticated("missing worker key");
  auto cached = checked_.find(key);
  if (cached == checked_.end()) {
    auto owner = by_hash_.find(Sha256Hex(key));
    if (owner == by_hash_.end()) return Unauthenticated("invalid worker key");
    if (checked_.size() >= 4096) checked_.clear();
    cached = checked_.emplace(key, owner->second).first;
  }
  if (cached->second != worker_id) {
    return PermissionDenied("this key belongs to another worker");
  }
  auto it = workers_.find(worker_id);
  if (it == workers_.end() || it->second.endpoint_id != endpoint_id) {
    return PermissionDenied("this key does not belong to endpoint " + endpoint_id);
  }
  if (it->second.state == WorkerState::kStopped) {
    return Unauthenticated("worker " + worker_id + " was stopped: " + it->second.stop_reason);
  }
  return &it->second;
}

void WorkerRegistry::Seen(WorkerInfo* w, bool take) {
  int64_t now = clock_->NowMs();
  w->last_seen_ms = now;
  w->heard_from = true;
  if (take && w->ready_ms == 0) w->ready_ms = now;
  if (w->state == WorkerState::kInitializing && take) w->state = WorkerState::kReady;
  if (w->state == WorkerState::kUnhealthy) {  // it came back after being declared lost
    GLOG_INFO("workers: %s is alive again", w->id.c_str());
    w->state = w->ready_ms ? WorkerState::kReady : WorkerState::kInitializing;
    w->last_error.clear();
  }
}

void WorkerRegistry::Ping(WorkerInfo* w, const std::vector<std::string>& running) {
  Seen(w, false);
  w->last_ping_ms = clock_->NowMs();
  jobs_->Ping(w->id, running, options_.ping_interval_ms);
}

void WorkerRegistry::MarkRecycle(const std::string& worker_id) {
  auto it = workers_.find(worker_id);
  if (it != workers_.end()) it->second.recycle = true;
}

void WorkerRegistry::Lose(WorkerInfo* w, WorkerState state, const std::string& why) {
  GLOG_WARN("workers: %s is %s: %s", w->id.c_str(), WorkerStateName(state), why.c_str());
  w->last_error = why;
  if (state == WorkerState::kStopped) return MarkStopped(w, why);
  checked_.clear();
  w->state = state;
  jobs_->WorkerLost(w->id, "worker " + w->id + " lost: " + why);
}

void WorkerRegistry::MarkStopped(WorkerInfo* w, const std::string& why) {
  checked_.clear();
  w->state = WorkerState::kStopped;
  if (w->stop_reason.empty()) w->stop_reason = why;
  jobs_->WorkerLost(w->id, "worker " + w->id + " lost: " + why);
  // A stopped worker never comes back: a restarted server must not load it as live (it stays
  // listed here until forgotten).
  store_->Write({store::Mutation::DeleteObject("worker", w->id)}, {});
  for (WorkerObserver* o : observers_) o->OnWorkerStopped(*w);
}

void WorkerRegistry::Stop(const std::string& worker_id, const std::string& why) {
  auto it = workers_.find(worker_id);
  if (it == workers_.end() || it->second.state == WorkerState::kStopped) return;
  if (it->second.stopping_ms > 0) return EndStop(worker_id);
  it->second.last_seen_ms = clock_->NowMs();  // forget_after counts from here
  Lose(&it->second, WorkerState::kStopped, why);
}

void WorkerRegistry::BeginStop(const std::string& worker_id, const std::string& reason) {
  auto it = workers_.find(worker_id);
  if (it == workers_.end() || it->second.state == WorkerState::kStopped) return;
  WorkerInfo& w = it->second;
  if (w.stopping_ms > 0) return;
  GLOG_INFO("workers: %s is stopping: %s", w.id.c_str(), reason.c_str());
  w.stopping_ms = clock_->NowMs();
  w.stop_reason = reason;
  w.draining = true;
  store_->Write({store::Mutation::DeleteObject("worker", w.id)}, {});
}

void WorkerRegistry::EndStop(const std::string& worker_id) {
  auto it = workers_.find(worker_id);
  if (it == workers_.end() || it->second.state == WorkerState::kStopped) return;
  WorkerInfo& w = it->second;
  if (w.stopping_ms == 0) return;
  GLOG_INFO("workers: %s stopped: %s", w.id.c_str(), w.stop_reason.c_str());
  w.last_seen_ms = clock_->NowMs();  // forget_after counts from here
  MarkStopped(&w, w.stop_reason);
}

void WorkerRegistry::RemoveEndpoint(const std::string& endpoint_id) {
  for (auto& [id, w] : workers_) {
    if (w.endpoint_id != endpoint_id || w.state == WorkerState::kStopped) continue;
    if (w.stopping_ms > 0) {
      EndStop(id);
    } else {
      Lose(&w, WorkerState::kStopped, "endpoint deleted");
    }
  }
}

void WorkerRegistry::Tick() {
  int64_t now = clock_->NowMs();
  int64_t lost_after = options_.ping_interval_ms * options_.lost_after_intervals;
  std::vector<std::string> forget;
  for (auto& [id, w] : workers_) {
    bool alive = w.state == WorkerState::kReady || w.state == WorkerState::kInitializing;
    if (alive && w.stopping_ms > 0) {  // its pings may end before its node reports its exit
      if (now - w.stopping_ms > options_.stop_exit_grace_ms) EndStop(id);
    } else if (alive && !w.heard_from) {
      if (now - w.created_ms > options_.start_timeout_ms) {
        Lose(&w, WorkerState::kUnhealthy,
             "not started after " + std::to_string(options_.start_timeout_ms / 1000) + " s");
      }
    } else if (alive && now - std::max(w.last_ping_ms, w.last_seen_ms) > lost_after) {
      Lose(&w, WorkerState::kUnhealthy,
           "no ping for " + std::to_string((now - w.last_ping_ms) / 1000) + " s");
    } else if (!alive && now - w.last_seen_ms > options_.forget_after_ms) {
      forget.push_back(id);
    }
  }
  if (!forget.empty()) checked_.clear();
  for (const auto& id : forget) {
    by_hash_.erase(workers_[id].secret_hash);
    workers_.erase(id);
    store_->Write({store::Mutation::DeleteObject("worker", id)}, {});
  }
}

WorkerCounts WorkerRegistry::Counts(const std::string& endpoint_id) const {
  WorkerCounts c;
  for (const auto& [id, w] : workers_) {
    if (w.endpoint_id != endpoint_id || w.stopping_ms > 0) continue;
    switch (w.state) {
      case WorkerState::kInitializing:
        ++c.initializing;
        break;
      case WorkerState::kReady:
        ++c.ready;
        if (jobs_->HeldCount(id) == 0)
          ++c.idle;
        else
          ++c.running;
        break;
      case WorkerState::kUnhealthy:
        ++c.unhealthy;
        break;
      case WorkerState::kStopped:
        break;
    }
  }
  return c;
}

std::vector<const WorkerInfo*> WorkerRegistry::List(const std::string& endpoint_id) const {
  std::vector<const WorkerInfo*> out;
  for (const auto& [id, w] : workers_) {
    if (endpoint_id.empty() || w.endpoint_id == endpoint_id) out.push_back(&w);
  }
  return out;
}

}  // namespace gantry::scheduling
