#include "agent/agent.h"

#include <sched.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <set>

#include "agent/gpu_inventory.h"
#include "agent/oci/runtime_probe.h"
#include "agent/process/mount_view.h"
#include "common/json.h"
#include "common/log.h"
#include "common/subprocess.h"
#include "http/http.h"

namespace gantry::agent {

// A blocking client to the server with the agent's token. One per thread.
class AgentHttp {
 public:
  AgentHttp(const http::Url& url, std::string token) : client_(url), token_(std::move(token)) {}
  Result<http::ClientResponse> Do(const std::string& method, const std::string& target,
                                  const std::string& body, int64_t timeout_ms = 10'000) {
    return client_.Do(method, target, body, {{"Authorization", "Bearer " + token_}}, timeout_ms);
  }

 private:
  http::HttpClient client_;
  std::string token_;
};

// The node status's templates and start counters (DESIGN §2.4).
static void AddTemplates(const TemplateManager& tm, protocol::NodeStatus* status) {
  status->templates.emplace();
  for (const auto& t : tm.Reports()) {
    protocol::TemplateState state = protocol::TemplateState::kNone;
    switch (t.state) {
      case TemplateState::kNone:
        break;
      case TemplateState::kStarting:
        state = protocol::TemplateState::kStarting;
        break;
      case TemplateState::kBusy:
        state = protocol::TemplateState::kBusy;
        break;
      case TemplateState::kReady:
        state = protocol::TemplateState::kReady;
        break;
    }
    status->templates->push_back({t.endpoint_id, t.version, state, t.pid, t.memory_kb / 1024,
                                  t.forks, t.snapshot, t.snapshot_bytes >> 20, t.container});
  }
  const StartCounters& c = tm.counters();
  status->start_counters = protocol::StartCounters{c.forks,
                                                   c.restores,
                                                   c.fork_failures,
                                                   c.restore_failures,
                                                   c.template_failures,
                                                   c.snapshot_failures,
                                                   c.evictions,
                                                   c.retirements};
}

std::string DefaultNodeId() {
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

// `n` hex digits naming this agent's data directory on the host: the workers' area and the
// network's bridge, chains and lock file are named so, so that agents of other data
// directories keep theirs apart.
static std::string DataDirTag(const AgentOptions& o, size_t n) {
  return Sha256Hex(std::filesystem::absolute(DataDir(o)).string()).substr(0, n);
}

// The host ids of containers' ids 0..65535 (ContainersOptions::userns_host): with
// --container-userns a root agent runs containers in user namespaces, their ids above the
// workers' uid range (and 400000 at least), where the kernel allows user namespaces; 0
// otherwise. The probe (a fork) runs once per process.
static uint32_t ContainerIdBase(const AgentOptions& o) {
  if (!o.container_userns || geteuid() != 0) return 0;
  static const int refused = TryUnshare(CLONE_NEWUSER);
  if (refused != 0) return 0;
  return static_cast<uint32_t>(
      std::max<int64_t>(400'000, int64_t{o.worker_uid_first} + o.worker_uid_count));
}
constexpr uint32_t kContainerIds = 65'536;

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
  oci::ImageStoreOptions options;
  options.id_map_host = ContainerIdBase(o);  // rootfs owned as the containers' ids
  options.id_map_size = kContainerIds;
  auto store = oci::ImageStore::Open(std::filesystem::absolute(DataDir(o) + "/images").string(),
                                     tools, options);
  if (!store.ok()) {
    GLOG_WARN("agent: container images are off: %s", store.status().ToString().c_str());
    return nullptr;
  }
  return std::move(*store);
}

// The containers of image workers when images are on (else null), run with crun where it runs
// a container on this host, else with runc (runtime_probe.h).
// `runtime` records the choice and why a preferred runtime was passed over.
static std::unique_ptr<oci::Containers> MakeContainers(const AgentOptions& o,
                                                       oci::ImageStore* images,
                                                       protocol::NodeRuntime* runtime) {
  if (!images) return nullptr;
  oci::ContainersOptions c;
  c.userns_host = ContainerIdBase(o);
  c.userns_size = kContainerIds;
  // A container's root in a user namespace must reach its rootfs: not through the (closed) data
  // directory but through directories it may traverse (its bundle's config is root's alone).
  std::string dir = std::filesystem::absolute(DataDir(o) + "/containers").string();
  if (c.userns_host) {
    // Writable layers stay in the data directory: the mapped root never walks their path
    // (overlayfs reaches them with the agent's credentials), and /var/lib may be a file system
    // overlayfs refuses as upper (it was in tests/vm).
    c.layers_dir = std::filesystem::absolute(DataDir(o) + "/containers/layers").string();
    dir = "/var/lib/gantry-containers/" + DataDirTag(o, 12);
    std::error_code ec;
    std::filesystem::create_directories(dir, ec);
    for (const std::string& d : {std::string("/var/lib/gantry-containers"), dir}) {
      if (ec || chmod(d.c_str(), 0711) != 0) {
        GLOG_WARN("agent: container images are off: cannot make %s: %s", d.c_str(),
                  ec ? ec.message().c_str() : strerror(errno));
        return nullptr;
      }
    }
  }
  const auto choice = oci::ChooseOciRuntime(
      {FindExecutable("crun"), FindExecutable("runc")}, [&](const std::string& runtime) {
        return oci::ProbeOciRuntime(runtime, dir + "/probe", c.cgroup_prefix);
      });
  // A preferred runtime passed over is how this host is, not a fault: the choice works.
  for (const std::string& note : choice.notes) GLOG_INFO("agent: %s", note.c_str());
  c.runtime = choice.runtime;
  runtime->oci_runtime = std::filesystem::path(choice.runtime).filename().string();
  runtime->oci_notes = choice.notes;
  if (c.userns_host) {
    runtime->oci_notes.push_back("user namespaces: container ids 0-65535 are host ids " +
                                 std::to_string(c.userns_host) + "-" +
                                 std::to_string(c.userns_host + kContainerIds - 1));
  } else {
    runtime->oci_notes.push_back("no user namespaces: a container's root is the host's");
  }
  GLOG_INFO("agent: container workers run with %s", c.runtime.c_str());
  return std::make_unique<oci::Containers>(images, dir, c);
}

// The workers' sandbox, or null with *error set.
static std::unique_ptr<WorkerSandbox> MakeSandbox(const AgentOptions& o, Status* error) {
  SandboxOptions s;
  s.root = geteuid() == 0;
  s.same_user = o.insecure_same_user;
  s.state_dir = std::filesystem::absolute(DataDir(o)).string();
  s.dir = o.worker_dir;
  if (s.dir.empty()) {
    s.dir = s.root && !s.same_user ? "/var/lib/gantry-workers/" + DataDirTag(o, 12)
                                   : s.state_dir + "/workers";
  }
  s.sdk_path = o.sdk_path;
  s.ca_file = http::CaFile();
  s.uid_first = o.worker_uid_first;
  s.uid_count = o.worker_uid_count;
  auto sandbox = WorkerSandbox::Open(s);
  if (!sandbox.ok()) {
    *error = sandbox.status();
    return nullptr;
  }
  GLOG_INFO("agent: process workers run as: %s (their files under %s)",
            (*sandbox)->describe().c_str(), s.dir.c_str());
  if (!(*sandbox)->separate_users()) {
    GLOG_WARN("agent: workers run as the agent's user and can read what it can: %s",
              (*sandbox)->describe().c_str());
  }
  return std::move(*sandbox);
}

// The workers' network namespaces, or null (with *note saying why) when they share the agent's.
static std::unique_ptr<net::WorkerNetwork> MakeNetwork(const AgentOptions& o, std::string* note) {
  if (o.host_network) {
    *note = "host network: --host-network";
  } else if (geteuid() != 0) {
    *note = "host network: agent not root";
  } else {
    net::NetworkOptions n;
    n.tag = DataDirTag(o, 6);
    n.server_url = o.server_url;
    auto network = net::WorkerNetwork::Open(n);
    if (network.ok()) {
      *note = (*network)->describe();
      GLOG_INFO("agent: workers run in their own network namespaces: %s", note->c_str());
      return std::move(*network);
    }
    *note = "host network: " + network.status().message();
  }
  GLOG_WARN(
      "agent: workers share the agent's network (%s): they can reach the host's "
      "loopback services",
      note->c_str());
  return nullptr;
}

// Whether this process holds CAP_SYS_RESOURCE, which CRIU needs to read the limits of a process
// of another user (a sandboxed template): root in some containers lacks it.
static bool HasSysResource() {
  std::ifstream status("/proc/self/status");
  std::string line;
  while (std::getline(status, line)) {
    if (line.rfind("CapEff:", 0) == 0) {
      return (std::stoull(line.substr(7), nullptr, 16) >> 24) & 1;  // CAP_SYS_RESOURCE = 24
    }
  }
  return false;
}

// The snapshotter, when snapshots are wanted and a usable CRIU is installed; else null.
static std::unique_ptr<Snapshotter> MakeSnapshotter(const AgentOptions& o,
                                                    const WorkerSandbox* sandbox) {
  if (!o.templates || !o.snapshots) return nullptr;
  if (sandbox && sandbox->separate_users() && !HasSysResource()) {
    GLOG_WARN(
        "agent: template snapshots are off: templates run as their endpoints' users, and CRIU "
        "cannot dump another user's process without CAP_SYS_RESOURCE, which this agent lacks "
        "(give it that capability; forks from templates still work)");
    return nullptr;
  }
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
                                                      Snapshotter* snapshotter,
                                                      net::WorkerNetwork* network) {
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
  if (network) {
    t.new_network = [network]() -> Result<Fd> {
      auto ns = network->Attach();
      if (!ns.ok()) return ns.status();
      return std::move(ns->ns);
    };
  }
  return std::make_unique<TemplateManager>(clock, runtime, snapshotter, t);
}

Agent::Agent(AgentOptions options, const Clock* clock, std::unique_ptr<ProcessRuntime> runtime)
    : options_(std::move(options)),
      clock_(clock),
      runtime_(std::move(runtime)),
      bundles_(NewHttpBundleCache(options_.server_url, options_.token, DataDir(options_))),
      sandbox_(MakeSandbox(options_, &sandbox_error_)),
      network_(MakeNetwork(options_, &network_note_)),
      snapshotter_(MakeSnapshotter(options_, sandbox_.get())),
      templates_(
          MakeTemplates(options_, clock, runtime_.get(), snapshotter_.get(), network_.get())),
      image_tools_(oci::NewSystemImageTools()),
      images_(MakeImageStore(options_, image_tools_.get())),
      containers_(MakeContainers(options_, images_.get(), &inventory_.runtime)),
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
            ReconcilerOptions r{sandbox_ ? sandbox_->sdk_path() : options_.sdk_path,
                                options_.workdir, options_.stop_grace_ms};
            r.gpu_devices = options_.fake_gpus.empty();  // simulated GPUs have no nodes
            r.wake = [this] {
              std::lock_guard<std::mutex> lock(mu_);
              wake_ = true;
              cv_.notify_all();
            };
            return r;
          }(),
          bundles_.get(), templates_.get(), containers_.get(), sandbox_.get(), network_.get()) {
  if (options_.node_id.empty()) options_.node_id = DefaultNodeId();
  if (containers_) containers_->CleanupAll();  // what a previous agent left mounted
}

Agent::~Agent() { Stop(); }

Status Agent::Register(AgentHttp* http) {
  auto r =
      http->Do("POST", protocol::NodePath(options_.node_id), ToJson(protocol::Encode(inventory_)));
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
  if (!sandbox_) return sandbox_error_;
  inventory_.runtime.sandbox = sandbox_->describe();
  inventory_.runtime.network = network_note_;
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
  inventory_.runtime.limits = runtime_->limits_summary();
  if (std::string note = runtime_->limits_note(); !note.empty()) {
    GLOG_WARN("agent: worker limits not enforced: %s", note.c_str());
    inventory_.runtime.limits = "none: " + note;
  }
  AgentHttp http(*url, options_.token);
  GANTRY_RETURN_IF_ERROR(Register(&http));
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
  if (network_) network_->Stop();             // the bridge and the firewall rules
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
  keep.merge(WantedDigests());
  std::vector<std::string> remove = image_gc_.Sweep(images_->List(), keep, now_ms);
  if (remove.empty()) return;
  if (gc_thread_.joinable()) gc_thread_.join();  // done: gc_running_ is false
  gc_running_ = true;
  gc_thread_ = std::thread([this, remove = std::move(remove)] {
    for (const std::string& digest : remove) {
      // Wanted again since the sweep (a redeploy): kept. The store holds the pulls meanwhile.
      Status st = images_->Remove(digest, [&] { return WantedDigests().count(digest) > 0; });
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

std::set<std::string> Agent::WantedDigests() const {
  std::vector<std::string> images;
  {
    std::lock_guard<std::mutex> lock(wanted_mu_);
    images = wanted_images_;
  }
  std::set<std::string> out;
  for (const std::string& image : images) {
    auto ref = oci::ImageRef::Parse(image);
    if (!ref.ok()) continue;
    if (auto found = images_->Lookup(*ref); found.ok()) out.insert(found->digest);
  }
  return out;
}

void Agent::PollLoop() {
  auto url = *http::ParseUrl(options_.server_url);
  AgentHttp http(url, options_.token);
  int64_t version = -1;
  while (!stopping_) {
    // A short long-poll, so that Stop() never waits long for this thread.
    auto r = http.Do("GET", protocol::AssignmentPath(options_.node_id, version, 2000), "", 10'000);
    if (!r.ok() || r->status >= 500) {
      usleep(500'000);  // the server is down or restarting: try again soon
      continue;
    }
    if (r->status == 404) {  // the server does not know this node (it restarted): register
      if (!Register(&http).ok()) usleep(500'000);
      continue;
    }
    auto a = protocol::DecodeText(r->body, protocol::DecodeAssignment);
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

protocol::NodeStatus Agent::CurrentStatus() const {
  protocol::NodeStatus status;
  status.workers = reconciler_.Reports();
  if (bundles_) {
    for (const auto& d : bundles_->Cached()) status.bundles.push_back(d);
  }
  if (templates_) AddTemplates(*templates_, &status);
  if (prefetch_) {
    status.images.emplace();
    for (const auto& p : prefetch_->Reports()) {
      const auto state = p.state == oci::PrefetchState::kPulling ? protocol::PullState::kPulling
                         : p.state == oci::PrefetchState::kReady ? protocol::PullState::kReady
                                                                 : protocol::PullState::kFailed;
      status.images->push_back({p.image, p.generation, state, p.detail, p.updated_ms, p.fetches});
    }
  }
  return status;
}

void Agent::MainLoop() {
  auto url = *http::ParseUrl(options_.server_url);
  AgentHttp http(url, options_.token);
  int64_t last_status = 0;
  uint64_t sent_image_changes = 0;  // prefetch_->Changes() when the last status was sent
  // Templates of the versions this node ran before come back from their snapshots.
  if (templates_) templates_->RestoreAll();
  while (!stopping_) {
    std::optional<protocol::Assignment> next;
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
      {
        // Wanted before any pull of it starts: an image removal asks this under the store's
        // lock, which the pulls then wait for.
        std::lock_guard<std::mutex> lock(wanted_mu_);
        wanted_images_.clear();
        for (const auto& i : next->images) wanted_images_.push_back(i.image);
      }
      for (const auto& i : next->images) {
        wants.push_back(oci::PrefetchWant{i.image, i.generation, PullOptionsFor(i)});
      }
      prefetch_->Want(wants);
    }
    if (next) reconciler_.SetAssignment(*next);
    bool changed = reconciler_.Step();
    auto lines = reconciler_.DrainLogs();
    if (!lines.empty()) {
      std::vector<protocol::LogLine> batch;
      for (auto& l : lines) {
        batch.push_back({std::move(l.id), l.stderr_stream, std::move(l.text), l.at_ms});
      }
      auto r =
          http.Do("POST", protocol::LogsPath(options_.node_id), ToJson(protocol::Encode(batch)));
      if (!r.ok()) GLOG_WARN("agent: cannot ship logs: %s", r.status().ToString().c_str());
    }
    int64_t now = clock_->NowMs();
    CollectImages(now);
    // Prefetch progress goes out as it comes (at most every 200 ms): the CLI follows it.
    const uint64_t image_changes = prefetch_ ? prefetch_->Changes() : 0;
    const bool images_changed = image_changes != sent_image_changes && now - last_status >= 200;
    if (changed || images_changed || now - last_status >= options_.status_interval_ms) {
      auto r = http.Do("POST", protocol::StatusPath(options_.node_id),
                       ToJson(protocol::Encode(CurrentStatus())));
      if (r.ok() && r->status == 200) {
        last_status = now;
        sent_image_changes = image_changes;
      }
    }
  }
}

}  // namespace gantry::agent
