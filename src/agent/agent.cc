#include "agent/agent.h"

#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <set>

#include "agent/gpu_inventory.h"
#include "agent/oci/runtime_probe.h"
#include "common/json.h"
#include "common/log.h"
#include "common/subprocess.h"
#include "http/http.h"

namespace gantry::agent {

// A blocking client to the server with the agent's token. One per thread.
class AgentHttp {
 public:
  AgentHttp(const http::Url& url, std::string token)
      : client_(url.host, url.port), token_(std::move(token)) {}
  Result<http::ClientResponse> Do(const std::string& method, const std::string& target,
                                  const std::string& body, int64_t timeout_ms = 10'000) {
    return client_.Do(method, target, body, {{"Authorization", "Bearer " + token_}}, timeout_ms);
  }

 private:
  http::HttpClient client_;
  std::string token_;
};

// The image fields of a worker or of an image to prefetch (image, registryAuth,
// insecureRegistry), as the server's AddImageAccessJson() writes them.
static scheduling::ImageAccess ParseImageAccess(const json::object& o) {
  scheduling::ImageAccess i;
  if (auto* f = Find(o, "image"); f && f->is_string()) i.image = f->as_string();
  if (auto* f = Find(o, "registryAuth"); f && f->is_object()) {
    if (auto* u = Find(f->as_object(), "username"); u && u->is_string()) {
      i.registry_username = u->as_string();
    }
    if (auto* p = Find(f->as_object(), "password"); p && p->is_string()) {
      i.registry_password = p->as_string();
    }
  }
  if (auto* f = Find(o, "insecureRegistry"); f && f->is_bool()) i.insecure_registry = f->get_bool();
  return i;
}

Result<scheduling::Assignment> ParseAssignment(const std::string& body) {
  auto v = ParseJson(body);
  if (!v.ok()) return v.status();
  if (!v->is_object()) return InvalidArgument("assignment is not an object");
  const auto& o = v->as_object();
  scheduling::Assignment a;
  if (auto* ver = Find(o, "version")) a.version = AsInt(*ver).value_or(0);
  if (auto* tv = Find(o, "templateVersions"); tv && tv->is_object()) {
    a.has_template_versions = true;
    for (const auto& kv : tv->as_object()) {
      a.template_versions[std::string(kv.key())] = AsInt(kv.value()).value_or(0);
    }
  }
  if (auto* is = Find(o, "images"); is && is->is_array()) {
    a.has_images = true;
    for (const auto& x : is->as_array()) {
      if (!x.is_object()) continue;
      a.images.push_back(scheduling::ImagePrefetch{ParseImageAccess(x.as_object()), ""});
      if (auto* g = Find(x.as_object(), "generation"); g && g->is_string()) {
        a.images.back().generation = g->as_string();
      }
    }
  }
  auto* ws = Find(o, "workers");
  if (!ws || !ws->is_array()) return a;
  for (const auto& x : ws->as_array()) {
    if (!x.is_object()) continue;
    const auto& w = x.as_object();
    scheduling::WorkerAssignment wa;
    auto str = [&](const char* k) -> std::string {
      const json::value* f = Find(w, k);
      return f && f->is_string() ? std::string(f->as_string()) : "";
    };
    wa.worker_id = str("workerId");
    wa.endpoint_id = str("endpointId");
    wa.workdir = str("workdir");
    wa.gpu_type = str("gpuType");
    wa.bundle = str("bundle");
    if (auto* f = Find(w, "endpointVersion")) wa.endpoint_version = AsInt(*f).value_or(0);
    if (auto* f = Find(w, "command"); f && f->is_array()) {
      for (const auto& c : f->as_array()) {
        if (c.is_string()) wa.command.emplace_back(c.as_string());
      }
    }
    if (auto* f = Find(w, "env"); f && f->is_object()) {
      for (const auto& kv : f->as_object()) {
        if (kv.value().is_string()) wa.env[std::string(kv.key())] = kv.value().as_string();
      }
    }
    if (auto* f = Find(w, "gpus"); f && f->is_array()) {
      for (const auto& g : f->as_array()) wa.gpus.push_back(static_cast<int>(AsInt(g).value_or(0)));
    }
    if (auto* f = Find(w, "cpu"); f && f->is_number()) wa.cpu = f->to_number<double>();
    if (auto* f = Find(w, "memoryMb")) wa.memory_mb = AsInt(*f).value_or(0);
    if (auto* f = Find(w, "flashboot"); f && f->is_bool()) wa.use_template = f->get_bool();
    static_cast<scheduling::ImageAccess&>(wa) = ParseImageAccess(w);
    wa.volume = str("volume");
    wa.volume_mount_path = str("volumeMountPath");
    if (auto* f = Find(w, "readOnlyRootfs"); f && f->is_bool()) wa.read_only_rootfs = f->get_bool();
    a.workers.push_back(std::move(wa));
  }
  return a;
}

// The node status's "templates" and "startCounters" (DESIGN §2.4).
static void AddTemplatesJson(const TemplateManager& tm, json::object* status) {
  json::array ts;
  for (const auto& t : tm.Reports()) {
    ts.push_back(json::object{{"endpointId", t.endpoint_id},
                              {"version", t.version},
                              {"state", t.state},
                              {"pid", t.pid},
                              {"memoryMb", t.memory_kb / 1024},
                              {"forks", t.forks},
                              {"snapshot", t.snapshot},
                              {"snapshotMb", t.snapshot_bytes >> 20},
                              {"container", t.container}});
  }
  const StartCounters& c = tm.counters();
  (*status)["templates"] = std::move(ts);
  (*status)["startCounters"] = json::object{{"forks", c.forks},
                                            {"restores", c.restores},
                                            {"forkFailures", c.fork_failures},
                                            {"restoreFailures", c.restore_failures},
                                            {"templateFailures", c.template_failures},
                                            {"snapshotFailures", c.snapshot_failures},
                                            {"evictions", c.evictions}};
}

static std::string HostName() {
  char buf[256] = {0};
  gethostname(buf, sizeof buf - 1);
  std::string s;
  for (char c : std::string(buf))
    s += (isalnum(static_cast<unsigned char>(c)) || c == '-') ? c : '-';
  return s.empty() ? "node" : s;
}

static std::string DataDir(const AgentOptions& o) {
  return o.workdir.empty() ? std::string(".") : o.workdir;
}

// The image store, when the tools for images are installed; else null (and why, logged).
static std::unique_ptr<oci::ImageStore> MakeImageStore(const AgentOptions& o,
                                                       oci::ImageTools* tools) {
  for (const char* tool : {"skopeo", "umoci"}) {
    if (FindExecutable(tool).empty()) {
      GLOG_WARN("agent: container images are off: %s is not installed (scripts/setup.sh)", tool);
      return nullptr;
    }
  }
  if (FindExecutable("runc").empty() && FindExecutable("crun").empty()) {
    GLOG_WARN(
        "agent: container images are off: neither runc nor crun is installed "
        "(scripts/setup.sh)");
    return nullptr;
  }
  auto store =
      oci::ImageStore::Open(std::filesystem::absolute(DataDir(o) + "/images").string(), tools);
  if (!store.ok()) {
    GLOG_WARN("agent: container images are off: %s", store.status().ToString().c_str());
    return nullptr;
  }
  return std::move(*store);
}

// The containers of image workers when images are on (else null), run with crun where it runs
// a container on this host, else with runc (runtime_probe.h).
static std::unique_ptr<oci::Containers> MakeContainers(const AgentOptions& o,
                                                       oci::ImageStore* images) {
  if (!images) return nullptr;
  const std::string dir = std::filesystem::absolute(DataDir(o) + "/containers").string();
  oci::ContainersOptions c;
  const auto choice = oci::ChooseOciRuntime(
      {FindExecutable("crun"), FindExecutable("runc")}, [&](const std::string& runtime) {
        return oci::ProbeOciRuntime(runtime, dir + "/probe", c.cgroup_prefix);
      });
  for (const std::string& note : choice.notes) GLOG_WARN("agent: %s", note.c_str());
  c.runtime = choice.runtime;
  GLOG_INFO("agent: container workers run with %s", c.runtime.c_str());
  return std::make_unique<oci::Containers>(images, dir, c);
}

// The snapshotter, when snapshots are wanted and a usable CRIU is installed; else null.
static std::unique_ptr<Snapshotter> MakeSnapshotter(const AgentOptions& o) {
  if (!o.templates || !o.snapshots) return nullptr;
  auto criu = FindCriu();
  if (!criu.ok()) {
    GLOG_WARN("agent: template snapshots are off: %s", criu.status().message().c_str());
    return nullptr;
  }
  GLOG_INFO("agent: template snapshots with %s", criu->c_str());
  return NewCriuSnapshotter(*criu);
}

static std::unique_ptr<TemplateManager> MakeTemplates(const AgentOptions& o, const Clock* clock,
                                                      ProcessRuntime* runtime,
                                                      Snapshotter* snapshotter) {
  if (!o.templates) return nullptr;
  TemplateOptions t;
  t.dir = DataDir(o) + "/templates";
  t.snapshots = snapshotter != nullptr;
  t.restore_mode = o.restore_mode;
  t.memory_budget_mb = o.template_memory_mb;
  if (t.memory_budget_mb <= 0) {
    t.memory_budget_mb = static_cast<int64_t>(sysconf(_SC_PHYS_PAGES)) *
                         static_cast<int64_t>(sysconf(_SC_PAGE_SIZE)) / (4 << 20);
  }
  t.disk_budget_mb = o.snapshot_disk_mb;
  return std::make_unique<TemplateManager>(clock, runtime, snapshotter, t);
}

Agent::Agent(AgentOptions options, const Clock* clock, std::unique_ptr<ProcessRuntime> runtime)
    : options_(std::move(options)),
      clock_(clock),
      runtime_(std::move(runtime)),
      bundles_(NewHttpBundleCache(options_.server_url, options_.token, DataDir(options_))),
      snapshotter_(MakeSnapshotter(options_)),
      templates_(MakeTemplates(options_, clock, runtime_.get(), snapshotter_.get())),
      image_tools_(oci::NewSystemImageTools()),
      images_(MakeImageStore(options_, image_tools_.get())),
      containers_(MakeContainers(options_, images_.get())),
      prefetch_(images_ ? std::make_unique<oci::ImagePrefetcher>(
                              [images = images_.get()](const std::string& image,
                                                       const oci::PullOptions& pull,
                                                       const oci::ProgressFn& progress) {
                                auto ref = oci::ImageRef::Parse(image);
                                if (!ref.ok()) return ref.status();
                                return images->Ensure(*ref, pull, progress).status();
                              },
                              clock)
                        : nullptr),
      image_gc_(options_.image_keep_unused_ms),
      reconciler_(
          clock, runtime_.get(),
          [&] {
            ReconcilerOptions r{options_.sdk_path, options_.workdir, options_.stop_grace_ms};
            r.gpu_devices = options_.fake_gpus.empty();  // simulated GPUs have no nodes
            r.wake = [this] {
              std::lock_guard<std::mutex> lock(mu_);
              wake_ = true;
              cv_.notify_all();
            };
            return r;
          }(),
          bundles_.get(), templates_.get(), containers_.get()) {
  if (options_.node_id.empty()) options_.node_id = HostName();
  if (containers_) containers_->CleanupAll();  // what a previous agent left mounted
}

Agent::~Agent() { Stop(); }

Status Agent::Register(AgentHttp* http) {
  json::array gpus;
  for (const auto& g : inventory_.gpus) {
    gpus.push_back(json::object{{"index", g.index}, {"type", g.type}, {"uuid", g.uuid}});
  }
  json::object body{{"name", inventory_.name},
                    {"cpuCores", inventory_.cpu_cores},
                    {"memoryMb", inventory_.memory_mb},
                    {"gpus", std::move(gpus)}};
  auto r = http->Do("POST", "/v1/nodes/" + options_.node_id, ToJson(body));
  if (!r.ok()) return r.status();
  if (r->status != 200) {
    return Unavailable("registering node " + options_.node_id + ": HTTP " +
                       std::to_string(r->status) + " " + r->body);
  }
  return Status::Ok();
}

Status Agent::Start() {
  auto url = http::ParseUrl(options_.server_url);
  if (!url.ok()) return url.status();
  inventory_.name = options_.node_id;
  inventory_.cpu_cores = static_cast<double>(sysconf(_SC_NPROCESSORS_ONLN));
  inventory_.memory_mb = static_cast<int64_t>(sysconf(_SC_PHYS_PAGES)) *
                         static_cast<int64_t>(sysconf(_SC_PAGE_SIZE)) / (1 << 20);
  if (!options_.fake_gpus.empty()) {
    auto fake = ParseFakeGpus(options_.fake_gpus);
    if (!fake.ok()) return fake.status();
    inventory_.gpus = std::move(*fake);
  } else {
    std::string note;
    inventory_.gpus = DiscoverNvmlGpus(&note);
    GLOG_INFO("agent: %s", note.c_str());
  }
  AgentHttp http(*url, options_.token);
  GANTRY_RETURN_IF_ERROR(Register(&http));
  if (std::string note = runtime_->limits_note(); !note.empty()) {
    GLOG_WARN("agent: worker limits not enforced: %s", note.c_str());
  }
  GLOG_INFO("agent: node %s registered with %s (%zu GPUs)", options_.node_id.c_str(),
            options_.server_url.c_str(), inventory_.gpus.size());
  poll_thread_ = std::thread([this] { PollLoop(); });
  main_thread_ = std::thread([this] { MainLoop(); });
  return Status::Ok();
}

void Agent::Stop() {
  if (stopping_.exchange(true)) return;
  cv_.notify_all();
  if (poll_thread_.joinable()) poll_thread_.join();
  if (main_thread_.joinable()) main_thread_.join();
  if (prefetch_) prefetch_->Stop();
  if (gc_thread_.joinable()) gc_thread_.join();
  runtime_->StopAll(options_.stop_grace_ms);  // workers and templates alike
  templates_.reset();                         // waits for a checkpoint or restore in progress
}

void Agent::CollectImages(int64_t now_ms) {
  // A sweep every 10 s (more often for short graces), never while an image is being pulled or
  // mounted (the store must not remove an image a pull or a new bundle is about to use), nor
  // while the last removals run.
  const int64_t every = std::clamp<int64_t>(options_.image_keep_unused_ms / 2, 100, 10'000);
  if (!images_ || !containers_ || !prefetch_ || now_ms - last_gc_ms_ < every) return;
  if (gc_running_ || prefetch_->Busy() || reconciler_.PreparingContainers()) return;
  last_gc_ms_ = now_ms;
  std::set<std::string> keep = containers_->ImagesInUse();
  for (const std::string& image : wanted_images_) {
    auto ref = oci::ImageRef::Parse(image);
    if (!ref.ok()) continue;
    if (auto found = images_->Lookup(*ref); found.ok()) keep.insert(found->digest);
  }
  std::vector<std::string> remove = image_gc_.Sweep(images_->List(), keep, now_ms);
  if (remove.empty()) return;
  if (gc_thread_.joinable()) gc_thread_.join();  // done: gc_running_ is false
  gc_running_ = true;
  gc_thread_ = std::thread([this, remove = std::move(remove)] {
    for (const std::string& digest : remove) {
      Status st = images_->Remove(digest);
      if (st.ok()) {
        GLOG_INFO("agent: removed image %s, unused for %lld s", digest.c_str(),
                  static_cast<long long>(options_.image_keep_unused_ms / 1000));
      } else {
        GLOG_WARN("agent: cannot remove image %s: %s", digest.c_str(), st.ToString().c_str());
      }
    }
    gc_running_ = false;
  });
}

void Agent::PollLoop() {
  auto url = *http::ParseUrl(options_.server_url);
  AgentHttp http(url, options_.token);
  int64_t version = -1;
  while (!stopping_) {
    // A short long-poll, so that Stop() never waits long for this thread.
    auto r = http.Do("GET",
                     "/v1/nodes/" + options_.node_id +
                         "/assignment?version=" + std::to_string(version) + "&wait=2000",
                     "", 10'000);
    if (!r.ok() || r->status >= 500) {
      usleep(500'000);  // the server is down or restarting: try again soon
      continue;
    }
    if (r->status == 404) {  // the server does not know this node (it restarted): register
      if (!Register(&http).ok()) usleep(500'000);
      continue;
    }
    auto a = ParseAssignment(r->body);
    if (!a.ok()) {
      GLOG_WARN("agent: bad assignment: %s", a.status().ToString().c_str());
      usleep(500'000);
      continue;
    }
    if (a->version == version) continue;
    version = a->version;
    {
      std::lock_guard<std::mutex> lock(mu_);
      pending_ = std::move(*a);
    }
    cv_.notify_all();
  }
}

void Agent::MainLoop() {
  auto url = *http::ParseUrl(options_.server_url);
  AgentHttp http(url, options_.token);
  int64_t last_status = 0;
  uint64_t sent_image_changes = 0;  // prefetch_->Changes() when the last status was sent
  // Templates of the versions this node ran before come back from their snapshots.
  if (templates_) templates_->RestoreAll();
  while (!stopping_) {
    std::optional<scheduling::Assignment> next;
    {
      std::unique_lock<std::mutex> lock(mu_);
      // Soon again while a worker waits for its template; else on news (an assignment, a
      // finished pull) or every 50 ms.
      cv_.wait_for(lock, std::chrono::milliseconds(reconciler_.waiting() ? 2 : 50),
                   [&] { return stopping_ || pending_.has_value() || wake_; });
      wake_ = false;
      next.swap(pending_);
    }
    if (stopping_) break;
    if (next && prefetch_ && next->has_images) {
      std::vector<oci::PrefetchWant> wants;
      for (const auto& i : next->images) {
        wants.push_back(oci::PrefetchWant{i.image, i.generation, PullOptionsFor(i)});
      }
      prefetch_->Want(wants);
      wanted_images_.clear();
      for (const auto& i : next->images) wanted_images_.push_back(i.image);
    }
    if (next) reconciler_.SetAssignment(*next);
    bool changed = reconciler_.Step();
    auto lines = reconciler_.DrainLogs();
    if (!lines.empty()) {
      json::array arr;
      for (const auto& l : lines) {
        arr.push_back(json::object{
            {"workerId", l.id}, {"stderr", l.stderr_stream}, {"text", l.text}, {"at", l.at_ms}});
      }
      auto r = http.Do("POST", "/v1/nodes/" + options_.node_id + "/logs",
                       ToJson(json::object{{"lines", std::move(arr)}}));
      if (!r.ok()) GLOG_WARN("agent: cannot ship logs: %s", r.status().ToString().c_str());
    }
    int64_t now = clock_->NowMs();
    CollectImages(now);
    // Prefetch progress goes out as it comes (at most every 200 ms): the CLI follows it.
    const uint64_t image_changes = prefetch_ ? prefetch_->Changes() : 0;
    const bool images_changed = image_changes != sent_image_changes && now - last_status >= 200;
    if (changed || images_changed || now - last_status >= options_.status_interval_ms) {
      json::array ws;
      for (const auto& rep : reconciler_.Reports()) {
        ws.push_back(json::object{{"workerId", rep.worker_id},
                                  {"state", rep.state},
                                  {"receivedAt", rep.received_ms},
                                  {"spawnedAt", rep.spawned_ms},
                                  {"exitCode", rep.exit_code},
                                  {"error", rep.error},
                                  {"startPath", rep.start_path},
                                  {"startNote", rep.start_note}});
      }
      json::array cached;
      if (bundles_) {
        for (const auto& d : bundles_->Cached()) cached.emplace_back(d);
      }
      json::object status{{"workers", std::move(ws)}, {"bundles", std::move(cached)}};
      if (templates_) AddTemplatesJson(*templates_, &status);
      if (prefetch_) {
        json::array images;
        for (const auto& p : prefetch_->Reports()) {
          images.push_back(json::object{{"image", p.image},
                                        {"generation", p.generation},
                                        {"state", p.state},
                                        {"detail", p.detail},
                                        {"updatedAt", p.updated_ms}});
        }
        status["images"] = std::move(images);
      }
      auto r = http.Do("POST", "/v1/nodes/" + options_.node_id + "/status", ToJson(status));
      if (r.ok() && r->status == 200) {
        last_status = now;
        sent_image_changes = image_changes;
      }
    }
  }
}

}  // namespace gantry::agent
