#include "agent/reconciler.h"

#include <cstdlib>
#include <filesystem>
#include <set>

#include "common/log.h"

namespace gantry::agent {

Reconciler::Reconciler(const Clock* clock, ProcessRuntime* runtime, ReconcilerOptions options,
                       BundleCache* bundles)
    : clock_(clock), runtime_(runtime), options_(std::move(options)), bundles_(bundles) {}

void Reconciler::SetAssignment(const scheduling::Assignment& assignment) {
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
}

std::map<std::string, std::string> Reconciler::WorkerEnvironment(
    const scheduling::WorkerAssignment& a, const std::string& bundle_root) const {
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
  // Only the assigned GPUs are visible; a CPU worker sees none.
  std::string devices;
  for (int g : a.gpus) devices += (devices.empty() ? "" : ",") + std::to_string(g);
  env["CUDA_VISIBLE_DEVICES"] = devices;
  env["NVIDIA_VISIBLE_DEVICES"] = devices.empty() ? "void" : devices;
  return env;
}

bool Reconciler::Step() {
  bool changed = false;
  int64_t now = clock_->NowMs();
  for (const auto& exit : runtime_->Reap()) {
    auto it = workers_.find(exit.id);
    if (it == workers_.end()) continue;
    auto& r = it->second.report;
    r.state = "exited";
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
    if (l.started && l.report.state == "running" && !l.stopping) {
      runtime_->Stop(it->first, options_.stop_grace_ms);
      l.stopping = true;
    }
    if (!l.started || l.report.state == "exited") {
      it = workers_.erase(it);
      changed = true;
    } else {
      ++it;
    }
  }
  // Start what is assigned and not started yet.
  for (const auto& a : assigned_) {
    Local& l = workers_[a.worker_id];
    if (l.started) continue;
    l.started = true;
    changed = true;
    if (a.env.empty()) {  // the server lost the secret (it restarted before this start)
      l.report.state = "exited";
      l.report.exit_code = -1;
      l.report.error = "no environment in the assignment";
      continue;
    }
    std::string bundle_root;
    if (!a.bundle.empty()) {
      auto root = bundles_ ? bundles_->Ensure(a.bundle)
                           : Result<std::string>(FailedPrecondition("no bundle cache"));
      if (!root.ok()) {
        l.report.state = "exited";
        l.report.exit_code = -1;
        l.report.error = "cannot fetch bundle: " + root.status().message();
        continue;
      }
      bundle_root = *root;
    }
    ProcessSpec ps;
    ps.id = a.worker_id;
    ps.argv = a.command;
    // With a bundle, the command runs in its root (or the endpoint's workdir inside it).
    if (!bundle_root.empty()) {
      ps.workdir =
          a.workdir.empty() || a.workdir[0] != '/' ? bundle_root + "/" + a.workdir : a.workdir;
    } else {
      ps.workdir = a.workdir.empty() ? options_.default_workdir : a.workdir;
    }
    ps.env = WorkerEnvironment(a, bundle_root);
    ps.cpu = a.cpu;
    ps.memory_mb = a.memory_mb;
    auto pid = runtime_->Start(ps);
    if (!pid.ok()) {
      GLOG_WARN("agent: cannot start worker %s: %s", a.worker_id.c_str(),
                pid.status().ToString().c_str());
      l.report.state = "exited";
      l.report.exit_code = -1;
      l.report.error = "cannot start: " + pid.status().message();
      continue;
    }
    l.report.state = "running";
    l.report.spawned_ms = clock_->NowMs();
  }
  return changed;
}

std::vector<scheduling::WorkerReport> Reconciler::Reports() const {
  std::vector<scheduling::WorkerReport> out;
  for (const auto& [id, l] : workers_) {
    if (l.started) out.push_back(l.report);
  }
  return out;
}

}  // namespace gantry::agent
