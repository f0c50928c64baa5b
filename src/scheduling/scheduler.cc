#include "scheduling/scheduler.h"

#include <algorithm>

#include "common/log.h"

namespace gantry::scheduling {

Scheduler::Scheduler(const Clock* clock, jobs::JobManager* jobs, EndpointRegistry* endpoints,
                     WorkerRegistry* workers, SchedulerOptions options,
                     const WorkerEnvFactory* worker_env, Metering* metering)
    : clock_(clock),
      jobs_(jobs),
      endpoints_(endpoints),
      workers_(workers),
      options_(options),
      worker_env_(worker_env),
      metering_(metering) {
  jobs_->AddObserver(this);
  endpoints_->AddObserver(this);
}

Scheduler::~Scheduler() {
  jobs_->RemoveObserver(this);
  endpoints_->RemoveObserver(this);
}

Status Scheduler::RegisterNode(const std::string& node_id, NodeInventory inventory) {
  if (!ValidEndpointId(node_id)) {
    return InvalidArgument("node id must be 1-64 characters of letters, digits, '-' and '_'");
  }
  Node& n = nodes_[node_id];
  bool fresh = n.id.empty();
  n.id = node_id;
  n.inventory = std::move(inventory);
  n.last_seen_ms = clock_->NowMs();
  n.alive = true;
  GLOG_INFO("scheduler: node %s %s: %.1f cores, %lld MB, %zu GPUs", node_id.c_str(),
            fresh ? "registered" : "re-registered", n.inventory.cpu_cores,
            static_cast<long long>(n.inventory.memory_mb), n.inventory.gpus.size());
  Rebuild(&n);
  return Status::Ok();
}

void Scheduler::Rebuild(Node* node) {
  Assignment next;
  next.version = node->assignment.version;
  for (const WorkerInfo* w : workers_->List("")) {
    // A worker being stopped leaves the assignment: its agent sends it SIGTERM.
    if (w->node_id != node->id || w->state == WorkerState::kStopped || w->stopping_ms) continue;
    const EndpointSpec* spec = endpoints_->Get(w->endpoint_id);
    if (!spec) continue;
    WorkerAssignment a;
    a.worker_id = w->id;
    a.endpoint_id = w->endpoint_id;
    a.endpoint_version = w->endpoint_version;
    a.command = spec->worker.command;
    a.workdir = spec->worker.workdir;
    a.bundle = spec->bundle;
    if (!w->secret.empty()) a.env = worker_env_->Build(*spec, *w, w->secret);
    a.gpu_type = w->gpu_type;
    a.gpus = w->gpus;
    a.cpu = spec->cpu;
    a.memory_mb = spec->memory_mb;
    a.use_template = spec->flashboot;
    static_cast<ImageAccess&>(a) = *spec;
    a.volume = spec->volume;
    a.volume_mount_path = spec->volume_mount_path;
    a.read_only_rootfs = spec->read_only_rootfs;
    a.host_network = spec->host_network;
    next.workers.push_back(std::move(a));
  }
  // The endpoint versions whose templates and snapshots the agent should keep, and the images
  // it should pull ahead of their workers.
  std::vector<std::string> gpu_models;
  for (const auto& g : node->inventory.gpus) gpu_models.push_back(g.type);
  std::map<std::string, ImagePrefetch> images;  // by image: one prefetch per image
  for (const EndpointSpec* spec : endpoints_->List()) {
    if (spec->flashboot) next.template_versions[spec->id] = spec->version;
    if (spec->image.empty() || !NodeCouldRun(*spec, gpu_models)) continue;
    auto [it, fresh] = images.try_emplace(spec->image, ImagePrefetch{ImageAccess(*spec), ""});
    std::string& generation = it->second.generation;
    generation += (fresh ? "" : ",") + spec->id + ":" + std::to_string(spec->version);
  }
  for (auto& [image, prefetch] : images) next.images.push_back(std::move(prefetch));
  auto ids = [](const Assignment& a) {
    std::vector<std::string> v;
    for (const auto& w : a.workers) v.push_back(w.worker_id);
    return v;
  };
  bool changed = ids(next) != ids(node->assignment) ||
                 next.template_versions != node->assignment.template_versions ||
                 next.images != node->assignment.images || node->assignment.version == 0;
  if (!changed) return;
  next.version = node->assignment.version + 1;
  node->assignment = std::move(next);
  auto waiters = std::move(node->waiters);
  node->waiters.clear();
  for (auto& w : waiters) w.cb(&node->assignment);
}

void Scheduler::PollAssignment(const std::string& node_id, int64_t known_version, int64_t wait_ms,
                               std::function<void(const Assignment*)> cb) {
  auto it = nodes_.find(node_id);
  if (it == nodes_.end()) return cb(nullptr);
  Node& n = it->second;
  n.last_seen_ms = clock_->NowMs();
  if (n.assignment.version != known_version || wait_ms <= 0) return cb(&n.assignment);
  n.waiters.push_back({clock_->NowMs() + wait_ms, std::move(cb)});
}

NodeView Scheduler::CapacityView(const std::string& id, const Node& n) {
  NodeView v;
  v.id = id;
  v.alive = n.alive;
  v.memory_mb = n.inventory.memory_mb;
  for (const auto& g : n.inventory.gpus) v.gpus.push_back({g.index, g.type, false});
  return v;
}

std::vector<NodeView> Scheduler::Views() const {
  std::vector<NodeView> out;
  for (const auto& [id, n] : nodes_) {
    NodeView v = CapacityView(id, n);
    v.cached = n.cached;
    for (const WorkerInfo* w : workers_->List("")) {
      if (w->node_id != id || w->state == WorkerState::kStopped) continue;
      if (const EndpointSpec* s = endpoints_->Get(w->endpoint_id)) v.memory_used_mb += s->memory_mb;
      for (int g : w->gpus) {
        for (auto& slot : v.gpus) {
          if (slot.index == g) slot.used = true;
        }
      }
    }
    out.push_back(std::move(v));
  }
  return out;
}

void Scheduler::StartWorker(const EndpointSpec& spec) {
  auto p = Place(spec, Views(), spec.bundle);
  if (!p.ok()) {
    health_[spec.id].throttled++;
    return;
  }
  WorkerInfo placed;
  placed.node_id = p->node_id;
  placed.gpu_type = p->gpu_type;
  placed.gpus = p->gpu_indexes;
  placed.endpoint_version = spec.version;
  placed.placed_ms = clock_->NowMs();
  auto reg = workers_->Register(spec.id, {}, &placed);
  if (!reg.ok()) return;
  GLOG_INFO("scheduler: placed worker %s of %s on %s (%s)", reg->first.id.c_str(), spec.id.c_str(),
            p->node_id.c_str(), p->gpu_type.c_str());
  Rebuild(&nodes_[p->node_id]);
}

void Scheduler::StopWorker(WorkerInfo* w, const std::string& why) {
  jobs_->DropWaiters(w->id);
  workers_->Stop(w->id, why);
  auto n = nodes_.find(w->node_id);
  if (n != nodes_.end()) Rebuild(&n->second);
}

void Scheduler::RetireWorker(WorkerInfo* w, const std::string& reason) {
  jobs_->DropWaiters(w->id);  // its job-take answers 204 now, and until it exits
  workers_->BeginStop(w->id, reason);
  auto n = nodes_.find(w->node_id);
  if (n != nodes_.end()) Rebuild(&n->second);
}

void Scheduler::Kill(const std::string& worker_id, const std::string& why) {
  if (WorkerInfo* w = workers_->Get(worker_id)) StopWorker(w, why);
}

void Scheduler::EndpointChanged(const std::string& endpoint_id) {
  for (auto& [id, n] : nodes_) Rebuild(&n);
  // A new version starts with a clean slate: no failed starts, no backoff.
  const EndpointSpec* spec = endpoints_->Get(endpoint_id);
  auto h = health_.find(endpoint_id);
  if (!spec) {
    if (h != health_.end()) health_.erase(h);
    next_start_ms_.erase(endpoint_id);
  } else if (h != health_.end() && h->second.version != spec->version) {
    h->second = EndpointHealth{};
    h->second.version = spec->version;
    next_start_ms_.erase(endpoint_id);
  }
  Evaluate(endpoint_id);
}

void Scheduler::Evaluate(const std::string& endpoint_id) {
  const EndpointSpec* spec = endpoints_->Get(endpoint_id);
  // Neither a command nor an image: its workers are started by hand.
  if (!spec || (spec->worker.command.empty() && spec->image.empty())) return;
  int64_t now = clock_->NowMs();
  EndpointHealth& health = health_[endpoint_id];
  std::vector<WorkerLoad> active;
  std::vector<WorkerInfo*> drained;
  for (const WorkerInfo* cw : workers_->List(endpoint_id)) {
    WorkerInfo* w = workers_->Get(cw->id);
    if (w->node_id.empty() || w->state == WorkerState::kStopped || w->stopping_ms) continue;
    int64_t idle_since = jobs_->IdleSince(w->id);
    if (w->endpoint_version != spec->version && !w->draining) {
      w->draining = true;  // a new version: old workers take no new job and go when idle
      jobs_->DropWaiters(w->id);
      workers_->Save(*w);
    }
    if (w->draining) {
      if (idle_since >= 0) drained.push_back(w);
      continue;
    }
    if (w->state == WorkerState::kUnhealthy) {  // its pings stopped: replace it
      StopWorker(w, w->last_error);
      continue;
    }
    bool ready = w->state == WorkerState::kReady;
    if (ready && health.consecutive_failures > 0) {
      health.consecutive_failures = 0;
      health.unhealthy = false;
    }
    int64_t held = static_cast<int64_t>(jobs_->HeldCount(w->id));
    active.push_back({w->id, ready, held, std::max(w->ready_ms, idle_since)});
  }
  for (WorkerInfo* w : drained) RetireWorker(w, "drained after a new version");

  auto load = jobs_->LoadOf(endpoint_id);
  EndpointLoad el{load.queued, load.queued_low, load.running, load.oldest_queued_ms};
  ScaleDecision d = DecideScale(*spec, el, active, now);
  health.throttled = 0;
  // After failed starts, new ones wait for the backoff (no hot restart loop).
  if (d.start > 0 && now >= next_start_ms_[endpoint_id]) {
    for (int64_t i = 0; i < d.start; ++i) StartWorker(*spec);
  }
  for (const auto& id : d.stop) {
    if (WorkerInfo* w = workers_->Get(id))
      RetireWorker(w, "idle for " + std::to_string(spec->idle_timeout_s) + " s");
  }
}

// What placement may prefer the node for: its bundles, ready templates and snapshots.
static std::set<std::string> CachedOn(const NodeStatus& status) {
  std::set<std::string> cached(status.bundles.begin(), status.bundles.end());
  for (const auto& t : status.templates.value_or(std::vector<protocol::TemplateReport>{})) {
    if (t.state == protocol::TemplateState::kReady) {
      cached.insert(TemplateCacheKey(t.endpoint_id, t.version));
    }
    if (t.snapshot) cached.insert(SnapshotCacheKey(t.endpoint_id, t.version));
  }
  return cached;
}

Status Scheduler::Report(const std::string& node_id, const NodeStatus& status,
                         const std::map<std::string, std::vector<std::string>>& log_tails) {
  auto it = nodes_.find(node_id);
  if (it == nodes_.end()) return NotFound("node not registered: " + node_id);
  Node& n = it->second;
  n.last_seen_ms = clock_->NowMs();
  n.cached = CachedOn(status);
  n.status = status;
  if (!n.alive) {
    GLOG_INFO("scheduler: node %s is back", node_id.c_str());
    n.alive = true;
  }
  for (const auto& r : status.workers) {
    WorkerInfo* w = workers_->Get(r.worker_id);
    if (!w || w->node_id != node_id) continue;
    if (r.received_ms && !w->received_ms) w->received_ms = r.received_ms;
    if (r.spawned_ms && !w->spawned_ms) {
      w->spawned_ms = r.spawned_ms;
      if (metering_) {
        metering_->WorkerStarted({w->id, w->endpoint_id, w->gpu_type,
                                  static_cast<int>(w->gpus.size()), r.spawned_ms, 0});
      }
    }
    if (r.state == protocol::WorkerRunState::kExited && w->state != WorkerState::kStopped &&
        !w->stopping_ms) {
      auto tail = log_tails.find(r.worker_id);
      WorkerExited(w, r, tail == log_tails.end() ? std::vector<std::string>{} : tail->second);
    }
    if (r.start_path != protocol::StartPath::kNone) w->start_path = r.start_path;
    if (!r.start_note.empty()) w->start_note = r.start_note;
  }
  EndStopsOfGoneWorkers(node_id, status);
  return Status::Ok();
}

void Scheduler::EndStopsOfGoneWorkers(const std::string& node_id, const NodeStatus& status) {
  std::set<std::string> running;
  for (const auto& r : status.workers) {
    if (r.state != protocol::WorkerRunState::kExited) running.insert(r.worker_id);
  }
  std::vector<std::string> gone;
  for (const WorkerInfo* w : workers_->List("")) {
    if (w->node_id == node_id && w->stopping_ms && w->state != WorkerState::kStopped &&
        !running.count(w->id)) {
      gone.push_back(w->id);
    }
  }
  for (const std::string& id : gone) workers_->EndStop(id);
}

void Scheduler::WorkerExited(WorkerInfo* w, const WorkerReport& r,
                             const std::vector<std::string>& tail) {
  if (w->recycle && r.exit_code == 0) {  // it asked to be recycled (refresh_worker): not an error
    return RetireWorker(w, "recycled after its job (refresh_worker)");  // gone: Report ends it
  }
  EndpointHealth& h = health_[w->endpoint_id];
  std::string why = r.error.empty() ? "exited with code " + std::to_string(r.exit_code) : r.error;
  if (w->secret.empty() && r.exit_code == -1 && r.spawned_ms == 0) {
    // The server restarted before the agent started it, so its secret is gone: not the
    // endpoint's failure (no backoff, health unchanged); the autoscaler places a new one.
    return StopWorker(w, why);
  }
  const bool failed_start = w->ready_ms == 0;  // it never became ready
  if (failed_start) why = "failed to start: " + why;
  h.last_error = "worker " + w->id + " " + why;
  if (!tail.empty()) h.last_log = tail;
  GLOG_WARN("scheduler: %s", h.last_error.c_str());
  const std::string endpoint_id = w->endpoint_id;
  const int64_t version = w->endpoint_version;
  StopWorker(w, why);
  // Counted against the endpoint only for its current version: a new deploy starts afresh.
  const EndpointSpec* spec = endpoints_->Get(endpoint_id);
  if (failed_start && spec && spec->version == version) FailedStart(*spec, h.last_error, tail);
}

// An endpoint whose jobs wait however often its starts fail (maxFailedStarts 0) is unhealthy
// after this many.
constexpr int kUnhealthyAfterFailures = 3;

void Scheduler::FailedStart(const EndpointSpec& spec, const std::string& why,
                            const std::vector<std::string>& tail) {
  EndpointHealth& h = health_[spec.id];
  h.version = spec.version;
  h.consecutive_failures++;
  int64_t backoff = options_.start_backoff_ms << std::min(h.consecutive_failures - 1, 16);
  next_start_ms_[spec.id] = clock_->NowMs() + std::min(backoff, options_.max_start_backoff_ms);
  // maxFailedStarts 0 keeps the jobs queued, but the endpoint is unhealthy all the same.
  const int limit = spec.max_failed_starts > 0 ? spec.max_failed_starts : kUnhealthyAfterFailures;
  if (h.consecutive_failures < limit) return;
  h.unhealthy = true;
  if (spec.max_failed_starts <= 0) return;
  // Nothing that waits would start: the callers learn why now, with the worker's last lines.
  std::string error =
      why + " (" + std::to_string(h.consecutive_failures) + " failed starts in a row)";
  if (!tail.empty()) error += "; its last lines:";
  for (const auto& line : tail) error += "\n" + line;
  if (int64_t n = jobs_->FailQueued(spec.id, JsonQuote(error))) {
    GLOG_WARN("scheduler: %s: %lld queued jobs failed: its workers keep failing to start",
              spec.id.c_str(), static_cast<long long>(n));
  }
}

void Scheduler::Tick() {
  int64_t now = clock_->NowMs();
  for (auto& [id, n] : nodes_) {
    std::vector<Node::Waiter> keep;
    std::vector<std::function<void(const Assignment*)>> due;
    for (auto& w : n.waiters) {
      if (w.deadline_ms <= now)
        due.push_back(std::move(w.cb));
      else
        keep.push_back(std::move(w));
    }
    n.waiters = std::move(keep);
    for (auto& cb : due) cb(&n.assignment);
    if (n.alive && now - n.last_seen_ms > options_.node_lost_ms) {
      GLOG_WARN("scheduler: node %s is silent; its workers are lost", id.c_str());
      n.alive = false;
      for (const WorkerInfo* cw : workers_->List("")) {
        if (cw->node_id == id && cw->state != WorkerState::kStopped) {
          workers_->Stop(cw->id, "node " + id + " lost");
        }
      }
      Rebuild(&n);
    }
    Rebuild(&n);  // endpoints updated or deleted since: their template versions
  }
  for (const EndpointSpec* spec : endpoints_->List()) Evaluate(spec->id);
}

const EndpointHealth& Scheduler::Health(const std::string& endpoint_id) {
  return health_[endpoint_id];
}

std::string Scheduler::Unplaceable(const std::string& endpoint_id, bool live_nodes_only) const {
  const EndpointSpec* spec = endpoints_->Get(endpoint_id);
  if (!spec || (spec->worker.command.empty() && spec->image.empty())) return "";
  const bool any_live =
      std::any_of(nodes_.begin(), nodes_.end(), [](const auto& n) { return n.second.alive; });
  if (live_nodes_only && !any_live) return "";
  std::vector<NodeView> nodes;
  for (const auto& [id, n] : nodes_) nodes.push_back(CapacityView(id, n));
  return WhyUnplaceable(*spec, nodes);
}

std::vector<std::string> Scheduler::NodeIds() const {
  std::vector<std::string> out;
  for (const auto& [id, n] : nodes_) out.push_back(id);
  return out;
}

json::array Scheduler::ImagePulls(const std::string& image) const {
  json::array out;
  for (const auto& [id, n] : nodes_) {
    if (!n.alive) continue;
    const auto wanted = std::find_if(n.assignment.images.begin(), n.assignment.images.end(),
                                     [&](const ImagePrefetch& i) { return i.image == image; });
    if (wanted == n.assignment.images.end()) continue;
    json::object pull{{"nodeId", id}, {"state", "queued"}, {"detail", ""}, {"updatedAt", 0}};
    for (const auto& r : n.status.images.value_or(std::vector<protocol::ImagePullReport>{})) {
      // A report of an earlier deploy's pull is not this one's.
      if (r.image != image || r.generation != wanted->generation) continue;
      pull["state"] = protocol::PullStateName(r.state);
      pull["detail"] = r.detail;
      pull["updatedAt"] = r.updated_ms;
    }
    out.push_back(std::move(pull));
  }
  return out;
}

json::object Scheduler::NodeJson(const std::string& node_id) const {
  auto it = nodes_.find(node_id);
  if (it == nodes_.end()) return json::object{};
  const Node& n = it->second;
  // Its registration (name, cpuCores, memoryMb, gpus, runtime), then what the server knows.
  json::object o = protocol::Encode(n.inventory);
  o["id"] = n.id;
  o["alive"] = n.alive;
  o["lastSeenAt"] = n.last_seen_ms;
  o["assignmentVersion"] = n.assignment.version;
  o["workers"] = static_cast<int64_t>(n.assignment.workers.size());
  protocol::AddAgentParts(n.status, &o);
  return o;
}

}  // namespace gantry::scheduling
