#pragma once
// The agent's reconciler: makes the processes on this node match the assignment (DESIGN §2.4).
// Pure logic over a ProcessRuntime, so it is tested with FakeProcessRuntime.
//
// Threading: one thread (the agent's main loop).

#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "agent/bundle_cache.h"
#include "agent/net/worker_network.h"
#include "agent/oci/containers.h"
#include "agent/process/process_runtime.h"
#include "agent/sandbox.h"
#include "agent/template/template_manager.h"
#include "common/env.h"
#include "protocol/node_protocol.h"

namespace gantry::agent {

struct ReconcilerOptions {
  std::string sdk_path;         // put on each worker's PYTHONPATH (the gantry and runpod packages)
  std::string default_workdir;  // for workers whose endpoint names none
  int64_t stop_grace_ms = 10'000;  // SIGTERM, then SIGKILL after this. Default: 10 s.
  // Variables of the agent's own environment passed on when the worker's env lacks them.
  std::vector<std::string> inherited = {"PATH", "HOME", "LANG", "USER", "TMPDIR"};
  // How long a worker waits for its endpoint's template while it is being restored or
  // checkpointed, before it starts in full instead. Default: 15 s.
  int64_t template_wait_ms = 15'000;
  // Called from a preparation thread when an image worker's pull and bundle are done, so that
  // the owner calls Step() at once. Without it, waiting() stays true during pulls (the owner
  // polls). Default: none.
  std::function<void()> wake;
  // Pass the device nodes of a container worker's GPUs (/dev/nvidiaN, nvidiactl, nvidia-uvm).
  // False with a simulated inventory (--fake-gpus): the worker then gets the GPU variables
  // only, as a process worker does. Default: true.
  bool gpu_devices = true;
};

class Reconciler {
 public:
  // `bundles` (may be null) fetches the code bundles workers run from.
  // `templates` (may be null: every start is a full one) forks workers from templates;
  // `containers` (may be null: image workers fail to start, saying why) runs image workers.
  // `sandbox` (may be null: workers run as the agent, in its workdir) gives process workers
  // their user, bundle copy and scratch directory. `network` (may be null: workers share the
  // agent's network) gives each worker a network namespace of its own, unless its endpoint
  // asks for the host's (hostNetwork); templates get theirs from the TemplateManager.
  Reconciler(const Clock* clock, ProcessRuntime* runtime, ReconcilerOptions options,
             BundleCache* bundles = nullptr, TemplateManager* templates = nullptr,
             oci::Containers* containers = nullptr, WorkerSandbox* sandbox = nullptr,
             net::WorkerNetwork* network = nullptr);

  ~Reconciler();

  // The latest assignment; the next Step() acts on it.
  void SetAssignment(const protocol::Assignment& assignment);
  // Reaps exits, stops what is no longer assigned, starts what is. Returns true when a report
  // changed (the agent then sends its status at once).
  bool Step();
  // Whether a worker waits for a template being restored or checkpointed, or for its image
  // pull: the caller should Step() again soon.
  bool waiting() const { return waiting_; }
  // An image worker is being prepared (pulled, mounted) on another thread right now.
  bool PreparingContainers() const;
  // One report per worker known here: running, or exited (until the assignment drops it).
  std::vector<protocol::WorkerReport> Reports() const;
  // Workers' output lines (templates' lines go to the TemplateManager).
  std::vector<LogLine> DrainLogs();
  // The environment a worker's process gets.
  // `bundle_root`: where its bundle is unpacked ("" for none).
  std::map<std::string, std::string> WorkerEnvironment(const protocol::WorkerAssignment& a,
                                                       const std::string& bundle_root = "") const;

 private:
  struct Local {
    protocol::WorkerAssignment spec;
    protocol::WorkerReport report;
    bool started = false;
    bool stopping = false;
    bool waited = false;     // waited for a template being restored
    bool container = false;  // runs an image: its bundle is cleaned up at its exit
    // An image worker whose pull and bundle are being made on another thread.
    std::shared_ptr<struct PendingContainer> pending;
  };
  // Starts an image worker (a.image): forked in the container of its version's template when
  // one is ready; else the pull and the bundle are made on another thread (a pull may take
  // minutes): false until they are done, then runc starts (and a template is prepared).
  bool StartContainer(Local& l);
  // What Containers::Prepare() needs for `a`'s container.
  oci::ContainerRequest ContainerRequestFor(const protocol::WorkerAssignment& a) const;
  // Whether an image worker of `a` may be forked from a template: not when its container needs
  // GPU device nodes (fixed when a container is made; a template's container has none).
  bool ContainerTemplateUsable(const protocol::WorkerAssignment& a) const;
  // Prepares (on another thread) a container template of `a`'s version, when one is wanted
  // and none is being prepared.
  void PrepareContainerTemplate(const protocol::WorkerAssignment& a);
  // Hands prepared container templates to the TemplateManager.
  void StartPreparedTemplates();
  // Starts `l`'s process by the fastest path at hand. False: not yet (it waits for a template).
  bool StartWorker(Local& l);
  // The process of `a`: its user, bundle, working directory and environment, with the scratch
  // directory `scratch_name` (a worker's id; for a template, a name that outlives its workers).
  Result<ProcessSpec> ProcessSpecFor(const protocol::WorkerAssignment& a,
                                     const std::string& scratch_name);
  // Whether `a`'s processes get a network namespace of their own.
  bool OwnNetwork(const protocol::WorkerAssignment& a) const { return network_ && !a.host_network; }
  // Starts `ps` (a worker's process, or the OCI runtime of its container) in a new network
  // namespace when OwnNetwork(a).
  Result<int> StartProcess(const protocol::WorkerAssignment& a, ProcessSpec ps);
  // Marks `l` as running, started by `path`; logs why a full start
  // was not a faster one.
  void MarkRunning(Local& l, protocol::StartPath path);
  // Marks `l` as failed to start.
  void FailStart(Local& l, const std::string& error);
  const Clock* clock_;
  ProcessRuntime* runtime_;
  ReconcilerOptions options_;
  BundleCache* bundles_;
  TemplateManager* templates_;
  oci::Containers* containers_;
  WorkerSandbox* sandbox_;
  net::WorkerNetwork* network_;
  std::mutex pull_mu_;
  std::vector<LogLine> pull_lines_;  // GUARDED_BY(pull_mu_): pull events, as the worker's lines
  // Pulls of workers that were unassigned meanwhile: their bundles are removed once done.
  std::vector<std::shared_ptr<struct PendingContainer>> abandoned_;
  // Container templates being prepared, by template key.
  struct TemplatePrep {
    std::string endpoint_id;
    int64_t version = 0;
    std::shared_ptr<struct PendingContainer> pending;
    bool host_network = false;
  };
  std::map<std::string, TemplatePrep> template_preps_;
  std::vector<protocol::WorkerAssignment> assigned_;
  std::map<std::string, Local> workers_;
  bool waiting_ = false;
};

// How to pull an assigned image: its registry credentials (when given) and insecure flag.
oci::PullOptions PullOptionsFor(const protocol::ImageAccess& image);

}  // namespace gantry::agent
