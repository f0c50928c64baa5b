#include "agent/reconciler.h"

#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <future>
#include <set>

#include "agent/oci/runtime_spec.h"
#include "common/log.h"

namespace gantry::agent {

// Only the assigned GPUs are visible, as CUDA and the NVIDIA container toolkit name them; a CPU
// worker sees none.
static void SetGpuEnvironment(const std::vector<int>& gpus,
                              std::map<std::string, std::string>* env) {
  std::string devices;
  for (int g : gpus) devices += (devices.empty() ? "" : ",") + std::to_string(g);
  (*env)["CUDA_VISIBLE_DEVICES"] = devices;
  (*env)["NVIDIA_VISIBLE_DEVICES"] = devices.empty() ? "void" : devices;
}

Reconciler::Reconciler(const Clock* clock, ProcessRuntime* runtime, ReconcilerOptions options,
                       BundleCache* bundles, TemplateManager* templates,
                       oci::Containers* containers, WorkerSandbox* sandbox,
                       net::WorkerNetwork* network)
    : clock_(clock),
      runtime_(runtime),
      options_(std::move(options)),
      bundles_(bundles),
      templates_(templates),
      containers_(containers),
      sandbox_(sandbox),
      network_(network) {}

// An image worker being prepared (pull, overlay, config.json) on another thread.
struct PendingContainer {
  std::string worker_id;
  std::atomic<bool> cancel{false};
  // Set by the preparation thread just before it returns (and wakes the owner): the result is
  // then a moment away, where the future is not ready yet.
  std::atomic<bool> finished{false};
  std::future<Result<ProcessSpec>> result;
  bool Done() const {
    return finished || result.wait_for(std::chrono::seconds(0)) == std::future_status::ready;
  }
};

Reconciler::~Reconciler() {
  // Pulls still running are cancelled (their tools are killed); the futures wait for that.
  for (auto& [id, l] : workers_) {
    if (l.pending) l.pending->cancel = true;
  }
  for (auto& p : abandoned_) p->cancel = true;
  for (auto& [key, p] : template_preps_) p.pending->cancel = true;
}

oci::PullOptions PullOptionsFor(const protocol::ImageAccess& image) {
  oci::PullOptions pull;
  if (!image.registry_username.empty() || !image.registry_password.empty()) {
    pull.credentials = oci::RegistryCredentials{image.registry_username, image.registry_password};
  }
  pull.insecure = image.insecure_registry;
  return pull;
}

bool Reconciler::PreparingContainers() const {
  if (!abandoned_.empty() || !template_preps_.empty()) return true;
  for (const auto& [id, l] : workers_) {
    if (l.pending) return true;
  }
  return false;
}

std::vector<LogLine> Reconciler::DrainLogs() {
  std::vector<LogLine> lines;
  {
    std::lock_guard<std::mutex> lock(pull_mu_);
    lines.swap(pull_lines_);
  }
  for (LogLine& l : runtime_->DrainLogs()) lines.push_back(std::move(l));
  if (!templates_) return lines;
  std::erase_if(lines, [&](const LogLine& l) {
    if (!TemplateManager::OwnsProcess(l.id)) return false;
    templates_->OnLog(l);
    return true;
  });
  return lines;
}

void Reconciler::SetAssignment(const protocol::Assignment& assignment) {
  assigned_ = assignment.workers;
  int64_t now = clock_->NowMs();
  for (const auto& a : assigned_) {
    auto [it, fresh] = workers_.try_emplace(a.worker_id);
    if (fresh) {
      it->second.spec = a;
      it->second.report.worker_id = a.worker_id;
      it->second.report.received_ms = now;
    }
  }
  if (templates_ && assignment.has_template_versions) {
    templates_->Retain(assignment.template_versions);
  }
}

std::map<std::string, std::string> Reconciler::WorkerEnvironment(
    const protocol::WorkerAssignment& a, const std::string& bundle_root) const {
  std::map<std::string, std::string> env = a.env;
  for (const auto& name : options_.inherited) {
    const char* v = getenv(name.c_str());
    if (v && !env.count(name)) env[name] = v;
  }
  // The SDK goes on the path unless the bundle brings its own gantry or runpod package.
  std::error_code ec;
  bool own_sdk = !bundle_root.empty() && (std::filesystem::exists(bundle_root + "/gantry", ec) ||
                                          std::filesystem::exists(bundle_root + "/runpod", ec));
  if (!options_.sdk_path.empty() && !own_sdk) {
    auto it = env.find("PYTHONPATH");
    // The bundle's own PYTHONPATH comes first, so a bundle can bring its own SDK.
    env["PYTHONPATH"] = it == env.end() ? options_.sdk_path : it->second + ":" + options_.sdk_path;
  }
  env["PYTHONUNBUFFERED"] = env.count("PYTHONUNBUFFERED") ? env["PYTHONUNBUFFERED"] : "1";
  SetGpuEnvironment(a.gpus, &env);
  return env;
}

bool Reconciler::Step() {
  bool changed = false;
  if (templates_) templates_->ReadReports();  // ends of workers forked inside containers
  for (const auto& exit : runtime_->Reap()) {
    if (templates_ && TemplateManager::OwnsProcess(exit.id)) {
      templates_->OnExit(exit);
      if (containers_) containers_->Cleanup(exit.id);  // a container template's bundle
      changed = true;
      continue;
    }
    auto it = workers_.find(exit.id);
    if (it == workers_.end()) continue;
    if (it->second.container && containers_) {
      for (const std::string& e : containers_->Cleanup(exit.id)) {
        std::lock_guard<std::mutex> lock(pull_mu_);
        pull_lines_.push_back(
            LogLine{exit.id, true, "gantry: container runtime: " + e, exit.at_ms});
      }
    }
    if (sandbox_) sandbox_->RemoveScratch(exit.id);
    auto& r = it->second.report;
    r.state = protocol::WorkerRunState::kExited;
    r.exit_code = exit.exit_code;
    if (exit.oom_killed) {
      r.error = "killed for exceeding its memory limit (" +
                std::to_string(it->second.spec.memory_mb) + " MB)";
    } else if (exit.term_signal && !it->second.stopping) {
      r.error = "killed by signal " + std::to_string(exit.term_signal);
    }
    changed = true;
  }
  std::set<std::string> wanted;
  for (const auto& a : assigned_) wanted.insert(a.worker_id);
  // Stop what is no longer assigned; forget it once it is gone.
  for (auto it = workers_.begin(); it != workers_.end();) {
    Local& l = it->second;
    if (wanted.count(it->first)) {
      ++it;
      continue;
    }
    if (l.started && l.report.state == protocol::WorkerRunState::kRunning && !l.stopping) {
      runtime_->Stop(it->first, options_.stop_grace_ms);
      l.stopping = true;
    }
    if (!l.started || l.report.state == protocol::WorkerRunState::kExited) {
      if (l.pending) {  // its pull goes on; cancelled, and cleaned up once it ends
        l.pending->cancel = true;
        abandoned_.push_back(std::move(l.pending));
      }
      it = workers_.erase(it);
      changed = true;
    } else {
      ++it;
    }
  }
  for (auto it = abandoned_.begin(); it != abandoned_.end();) {
    if (!(*it)->Done()) {
      ++it;
      continue;
    }
    if ((*it)->result.get().ok()) containers_->Cleanup((*it)->worker_id);
    it = abandoned_.erase(it);
  }
  StartPreparedTemplates();
  // Templates first: one that became ready serves the workers waiting for it at once.
  if (templates_ && templates_->Step()) changed = true;
  // Start what is assigned and not started yet.
  waiting_ = false;
  for (const auto& a : assigned_) {
    Local& l = workers_[a.worker_id];
    if (l.started) continue;
    if (StartWorker(l)) {
      changed = true;
    } else if (!l.pending || !options_.wake) {
      waiting_ = true;  // a template being restored, or a pull nobody wakes us for
    }
  }
  return changed;
}

oci::ContainerRequest Reconciler::ContainerRequestFor(const protocol::WorkerAssignment& a) const {
  oci::ContainerRequest r;
  r.worker_id = a.worker_id;
  r.image = a.image;
  r.pull = PullOptionsFor(a);
  r.command = a.command;
  // The server's RunPod variables and the endpoint's env; GPUs as the NVIDIA toolkit names them.
  r.env = a.env;
  SetGpuEnvironment(a.gpus, &r.env);
  if (options_.gpu_devices) r.devices = oci::NvidiaDeviceNodes(a.gpus);
  r.cpu = a.cpu;
  r.memory_mb = a.memory_mb;
  r.volume = a.volume;
  if (!a.volume_mount_path.empty()) r.volume_mount_path = a.volume_mount_path;
  r.read_only_rootfs = a.read_only_rootfs;
  if (OwnNetwork(a)) network_->RewriteEnvironment(&r.env);  // the server at the gateway
  return r;
}

bool Reconciler::ContainerTemplateUsable(const protocol::WorkerAssignment& a) const {
  return templates_ && a.use_template && (a.gpus.empty() || !options_.gpu_devices);
}

// Runs containers->Prepare(request) on a thread of its own; its pull events go to `log` (if
// set) as they come, and `wake` (if set) is called once the result is ready.
static std::shared_ptr<PendingContainer> PrepareAsync(
    oci::Containers* containers, const oci::ContainerRequest& request,
    const std::function<void()>& wake, std::function<void(const oci::PullEvent&)> log) {
  auto pending = std::make_shared<PendingContainer>();
  pending->worker_id = request.worker_id;
  oci::ContainerRequest r = request;
  r.pull.cancel = &pending->cancel;
  PendingContainer* self = pending.get();  // outlives the thread: its future waits for it
  pending->result = std::async(std::launch::async, [containers, r, self, wake, log] {
    auto spec = containers->Prepare(r, [&](const oci::PullEvent& e) {
      if (log) log(e);
    });
    self->finished = true;
    if (wake) wake();
    return spec;
  });
  return pending;
}

void Reconciler::PrepareContainerTemplate(const protocol::WorkerAssignment& a) {
  const std::string key = TemplateManager::Key(a.endpoint_id, a.endpoint_version);
  if (!ContainerTemplateUsable(a) || !templates_->Wanted(key) || template_preps_.count(key)) {
    return;
  }
  oci::ContainerRequest t = ContainerRequestFor(a);  // the worker's container, without identity
  t.worker_id = TemplateManager::NewProcessId(key);
  t.env = templates_->TemplateEnvironment(key, std::move(t.env), /*container=*/true);
  t.devices.clear();
  template_preps_[key] = {a.endpoint_id, a.endpoint_version,
                          PrepareAsync(containers_, t, options_.wake, nullptr), a.host_network};
}

void Reconciler::StartPreparedTemplates() {
  for (auto it = template_preps_.begin(); it != template_preps_.end();) {
    if (!it->second.pending->Done()) {
      ++it;
      continue;
    }
    auto spec = it->second.pending->result.get();
    if (!spec.ok()) {
      GLOG_WARN("agent: cannot prepare the template container of %s: %s", it->first.c_str(),
                spec.status().ToString().c_str());
    } else if (!templates_->EnsureContainer(it->first, it->second.endpoint_id, it->second.version,
                                            *spec, it->second.host_network)) {
      containers_->Cleanup(spec->id);
    }
    it = template_preps_.erase(it);
  }
}

bool Reconciler::StartContainer(Local& l) {
  const protocol::WorkerAssignment& a = l.spec;
  if (!containers_) {
    l.started = true;
    FailStart(l,
              "this agent cannot run container images (runc or crun, skopeo or umoci missing: run "
              "scripts/setup.sh); image " +
                  a.image);
    return true;
  }
  const std::string key = TemplateManager::Key(a.endpoint_id, a.endpoint_version);
  if (!l.pending) {
    const oci::ContainerRequest r = ContainerRequestFor(a);
    if (!ContainerTemplateUsable(a)) {
      l.report.start_note = !a.use_template || !templates_
                                ? ""
                                : "a GPU container: its device nodes are fixed when the container "
                                  "is made, and a template's container has none";
    } else if (templates_->Get(key) == TemplateManager::State::kReady) {
      // Forked in the sandbox of its version's template: no pull, no bundle, no runtime.
      ProcessSpec ps;
      ps.id = a.worker_id;
      ps.env = r.env;  // added to the template's (the image's env)
      ps.cpu = a.cpu;
      ps.memory_mb = a.memory_mb;
      ps.pids_max = oci::kContainerPidsMax;  // as a container of its own has
      auto pid = templates_->Fork(key, ps);
      if (pid.ok()) {
        l.started = true;
        MarkRunning(l, protocol::StartPath::kFork);
        return true;
      }
      l.report.start_note = "fork failed: " + pid.status().message();
    } else if (templates_->Get(key) == TemplateManager::State::kStarting) {
      l.report.start_note = "the template is still initialising";
    }
    const std::string id = a.worker_id;
    l.pending = PrepareAsync(containers_, r, options_.wake, [this, id](const oci::PullEvent& e) {
      std::lock_guard<std::mutex> lock(pull_mu_);
      pull_lines_.push_back(LogLine{id, true, "gantry: pull: " + e.text, clock_->NowMs()});
    });
  }
  if (!l.pending->Done()) return false;
  auto spec = l.pending->result.get();
  l.pending.reset();
  l.started = true;
  if (!spec.ok()) {
    FailStart(l, "cannot start image " + a.image + ": " + spec.status().ToString());
    return true;
  }
  auto pid = StartProcess(a, *spec);
  if (!pid.ok()) {
    containers_->Cleanup(a.worker_id);
    FailStart(l, "cannot start: " + pid.status().message());
    return true;
  }
  l.container = true;
  MarkRunning(l, protocol::StartPath::kFull);
  // The next worker of this version is forked from a template in its own container.
  PrepareContainerTemplate(a);
  return true;
}

void Reconciler::MarkRunning(Local& l, protocol::StartPath path) {
  l.report.state = protocol::WorkerRunState::kRunning;
  l.report.start_path = path;
  l.report.spawned_ms = clock_->NowMs();
  if (path == protocol::StartPath::kFull && !l.report.start_note.empty()) {
    GLOG_INFO("agent: worker %s started in full: %s", l.spec.worker_id.c_str(),
              l.report.start_note.c_str());
  }
}

void Reconciler::FailStart(Local& l, const std::string& error) {
  l.report.state = protocol::WorkerRunState::kExited;
  l.report.exit_code = -1;
  l.report.error = error;
}

bool Reconciler::StartWorker(Local& l) {
  const protocol::WorkerAssignment& a = l.spec;
  if (a.env.empty()) {  // the server lost the secret (it restarted before this start)
    l.started = true;
    FailStart(l, "no environment in the assignment");
    return true;
  }
  if (!a.image.empty()) return StartContainer(l);
  // Fork from a template when one is ready; wait a little for one being restored or
  // checkpointed; otherwise start in full (and make a template for the next start).
  const std::string key = TemplateManager::Key(a.endpoint_id, a.endpoint_version);
  using State = TemplateManager::State;
  State state = State::kNone;
  if (templates_ && a.use_template) {
    state = templates_->Get(key);
    if (state == State::kNone && templates_->HasSnapshot(key)) {
      templates_->Ensure(key, a.endpoint_id, a.endpoint_version, ProcessSpec{});
      state = templates_->Get(key);
    }
    if (state == State::kBusy) {
      if (clock_->NowMs() - l.report.received_ms < options_.template_wait_ms) {
        l.waited = true;
        return false;
      }
      l.report.start_note = "the template was still being restored or checkpointed";
    }
  }
  l.started = true;
  auto ps = ProcessSpecFor(a, a.worker_id);
  if (!ps.ok()) {
    FailStart(l, ps.status().message());
    return true;
  }
  if (state == State::kReady) {
    auto pid = templates_->Fork(key, *ps);
    if (pid.ok()) {
      MarkRunning(l, l.waited ? protocol::StartPath::kRestore : protocol::StartPath::kFork);
      return true;
    }
    l.report.start_note = "fork failed: " + pid.status().message();
  } else if (state == State::kStarting) {
    l.report.start_note = "the template is still initialising";
  }
  auto pid = StartProcess(a, *ps);
  if (!pid.ok()) {
    if (sandbox_) sandbox_->RemoveScratch(a.worker_id);
    GLOG_WARN("agent: cannot start worker %s: %s", a.worker_id.c_str(),
              pid.status().ToString().c_str());
    FailStart(l, "cannot start: " + pid.status().message());
    return true;
  }
  MarkRunning(l, protocol::StartPath::kFull);
  if (templates_ && a.use_template && templates_->Get(key) == State::kNone) {
    // The template's own scratch directory: the first worker's goes when that worker ends.
    auto tps = ProcessSpecFor(a, std::string(WorkerSandbox::kKeptScratchPrefix) + key);
    if (tps.ok()) templates_->Ensure(key, a.endpoint_id, a.endpoint_version, *tps, a.host_network);
  }
  return true;
}

Result<ProcessSpec> Reconciler::ProcessSpecFor(const protocol::WorkerAssignment& a,
                                               const std::string& scratch_name) {
  WorkerSandbox::Identity who;
  if (sandbox_) {
    auto user = sandbox_->UserFor(a.endpoint_id);
    if (!user.ok()) return Unavailable("cannot sandbox: " + user.status().message());
    who = *user;
  }
  std::string bundle_root;
  if (!a.bundle.empty()) {
    auto root = bundles_ ? bundles_->Ensure(a.bundle)
                         : Result<std::string>(FailedPrecondition("no bundle cache"));
    if (root.ok() && sandbox_) root = sandbox_->Bundle(who, a.bundle, *root);
    if (!root.ok()) return Unavailable("cannot fetch bundle: " + root.status().message());
    bundle_root = *root;
  }
  std::string scratch;
  if (sandbox_) {
    auto dir = sandbox_->Scratch(who, scratch_name);
    if (!dir.ok()) return Unavailable("cannot sandbox: " + dir.status().message());
    scratch = *dir;
  }
  ProcessSpec ps;
  ps.id = a.worker_id;
  ps.argv = a.command;
  ps.uid = who.uid;
  ps.gid = who.gid;
  // With a bundle, the command runs in its root (or the endpoint's workdir inside it); without
  // one, in its scratch directory (never the agent's data directory).
  if (!bundle_root.empty()) {
    ps.workdir =
        a.workdir.empty() || a.workdir[0] != '/' ? bundle_root + "/" + a.workdir : a.workdir;
  } else if (!a.workdir.empty()) {
    ps.workdir = a.workdir;
  } else {
    ps.workdir = scratch.empty() ? options_.default_workdir : scratch;
  }
  ps.env = WorkerEnvironment(a, bundle_root);
  if (sandbox_) {
    sandbox_->Environment(who, scratch, a.env, &ps.env);
    ps.view = sandbox_->View(who, bundle_root);
  }
  ps.cpu = a.cpu;
  ps.memory_mb = a.memory_mb;
  ps.pids_max = oci::kContainerPidsMax;  // a fork bomb stops there, as in a container
  if (OwnNetwork(a)) network_->RewriteEnvironment(&ps.env);  // the server at the gateway
  return ps;
}

Result<int> Reconciler::StartProcess(const protocol::WorkerAssignment& a, ProcessSpec ps) {
  if (!OwnNetwork(a)) return runtime_->Start(ps);
  auto ns = network_->Attach();
  if (!ns.ok()) return Unavailable("no network namespace: " + ns.status().message());
  ps.netns_fd = ns->ns.get();  // joined before Start() returns; closed here after
  return runtime_->Start(ps);
}

std::vector<protocol::WorkerReport> Reconciler::Reports() const {
  std::vector<protocol::WorkerReport> out;
  for (const auto& [id, l] : workers_) {
    if (l.started) out.push_back(l.report);
  }
  return out;
}

}  // namespace gantry::agent
