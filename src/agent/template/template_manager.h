#pragma once
// TemplateManager: the agent's worker templates and their snapshots (DESIGN §4).
//
// A template is a worker process of one endpoint version, started without an identity, that
// parks once its initialisation is done (the Python SDK does so in serverless.start() when
// GANTRY_TEMPLATE_SOCKET is set; protocol in sdk/python/gantry/serverless/template.py). A new
// worker is then a fork of it, made through ProcessRuntime::Launch() so that the runtime owns
// it like any other worker. Once a template is ready it is checkpointed with the Snapshotter
// (CRIU) to <dir>/<key>/snapshot; after an agent restart, or when a worker of that version is
// wanted and no template runs, the template is restored from it and forked from again.
//
// Start paths, fastest first: fork (a template is ready), restore (a snapshot is on disk: the
// caller waits until the restored template is ready, then forks), full start. Any failure on a
// fast path is logged and counted, and the caller goes on to the next path.
//
// Templates are processes of the runtime with ids "tpl-<key>"; the caller passes their exits
// and log lines here (OwnsProcess()). Each has its own abstract Unix socket, named after the
// directory and the key, so that a restored template finds the new agent; a connection is
// accepted only from the template's own pid (SO_PEERCRED), since the fork requests carry worker
// secrets.
//
// Budgets: templates' memory (PSS) and snapshots' disk use are kept within the options'
// budgets, and the host's available memory and free disk above the options' minimums, by
// evicting the least recently used; a template or snapshot that alone exceeds its budget is
// not kept. Versions: Retain() drops the templates and
// snapshots of endpoint versions that are no longer current.
//
// Container templates (image workers, docs/containers.md): the template is the init of an OCI
// container (the caller prepares it: EnsureContainer()), so its workers cannot become the
// agent's children; they are the template's, in its sandbox. The runtime owns them as external
// processes (LaunchContext::external): the template reports how each ended (ReadReports()).
// Such a template is not checkpointed, and one dropped while workers of it run is retired: it
// takes no more forks and exits after its last worker (its exit would end them all).
//
// Threading: one thread (the agent's main loop) calls every method. Checkpoints and restores
// run on a background thread, one at a time; the destructor waits for the one in progress.

#include <cstdint>
#include <functional>
#include <future>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "agent/process/process_runtime.h"
#include "agent/snapshot/criu.h"
#include "common/env.h"
#include "common/fd.h"

namespace gantry::agent {

struct TemplateOptions {
  std::string dir;        // snapshots and metadata live in <dir>/<key>/; created if missing
  bool snapshots = true;  // checkpoint ready templates (when a Snapshotter is given)
  RestoreMode restore_mode = RestoreMode::kFull;
  int64_t ready_timeout_ms = 300'000;  // a template not parked by then is given up
  int64_t fork_timeout_ms = 5'000;     // a fork request not answered by then fails
  int64_t park_timeout_ms = 5'000;     // before a checkpoint, for the template to stop
  int64_t memory_budget_mb = 8192;     // all templates' PSS together
  int64_t disk_budget_mb = 20480;      // all snapshots together
  // Host pressure: templates are evicted while the host's available memory is below this, and
  // snapshots while the free space of `dir`'s file system is.
  int64_t min_available_memory_mb = 1024;
  int64_t min_free_disk_mb = 2048;
  int64_t budget_check_ms = 2'000;  // how often the budgets are checked
  // A fresh template initialises at this nice value, so that it never slows the full start of
  // the worker that runs beside it; once parked it gets the default priority back, so that
  // forks are fast.
  int init_nice = 10;
  // Makes the network namespace of a template that does not keep the host's
  // (net/worker_network.h: WorkerNetwork::Attach). Null: every template keeps the agent's.
  std::function<Result<Fd>()> new_network;
};

// The state of an endpoint version's template on this node.
enum class TemplateState {
  kNone,      // no template; maybe a snapshot (HasSnapshot())
  kStarting,  // a fresh template is initialising: as slow as a full start
  kBusy,      // being checkpointed or restored: ready soon
  kReady,
};

// What the agent reports about one template or snapshot (DESIGN §2.4).
struct TemplateReport {
  std::string endpoint_id;
  int64_t version = 0;
  TemplateState state = TemplateState::kNone;  // kNone: the snapshot only
  int pid = 0;
  int64_t memory_kb = 0;  // PSS at the last budget check
  int64_t forks = 0;
  bool snapshot = false;
  int64_t snapshot_bytes = 0;
  bool container = false;  // the template runs inside a container of the endpoint's image
};

// What the manager measures on the host (an OS seam; tests fake it). Null members: the real
// measure (PSS from /proc/PID/smaps_rollup, MemAvailable from /proc/meminfo, statvfs).
struct HostProbe {
  std::function<int64_t(int pid)> pss_kb;
  std::function<int64_t()> available_memory_kb;
  std::function<int64_t(const std::string& dir)> free_disk_kb;
};

// Counts of start paths and fallbacks since the agent started.
struct StartCounters {
  int64_t forks = 0;          // workers forked from a template
  int64_t restores = 0;       // templates restored from a snapshot
  int64_t fork_failures = 0;  // forks that failed (the worker went on to the next path)
  int64_t restore_failures = 0;
  int64_t template_failures = 0;  // templates that died or never parked
  int64_t snapshot_failures = 0;
  int64_t evictions = 0;
  int64_t retirements = 0;  // container templates retired while their workers ran
};

class TemplateManager {
 public:
  using State = TemplateState;

  // `runtime` (not owned) runs the templates and the forked workers; `snapshotter` (not owned,
  // may be null: no snapshots); `probe` measures templates and the host. Reads the snapshots
  // already in options.dir.
  TemplateManager(const Clock* clock, ProcessRuntime* runtime, Snapshotter* snapshotter,
                  TemplateOptions options, HostProbe probe = {});
  ~TemplateManager();

  static std::string Key(const std::string& endpoint_id, int64_t version);
  // Whether a runtime process id is a template's (its exits and lines belong here).
  static bool OwnsProcess(const std::string& process_id);

  State Get(const std::string& key) const;
  bool HasSnapshot(const std::string& key) const;

  // Makes sure a template of `key` exists or is coming: restores its snapshot if there is one,
  // else starts `worker` (a worker's spec; its id and identity are replaced) as a template.
  // Does nothing when a template exists, or when this key's template failed before. It runs in
  // a network namespace of its own (options.new_network) unless `host_network`.
  void Ensure(const std::string& key, const std::string& endpoint_id, int64_t version,
              const ProcessSpec& worker, bool host_network = false);

  // Whether a template of `key` is worth making: none exists and none failed.
  bool Wanted(const std::string& key) const;
  // A new runtime process id for a template of `key` (OwnsProcess() holds for it).
  static std::string NewProcessId(const std::string& key);
  // The environment a template of `key` gets from a worker's: without the worker's identity,
  // with no GPU, with the template's socket; for a container, GANTRY_TEMPLATE_CONTAINER=1.
  std::map<std::string, std::string> TemplateEnvironment(const std::string& key,
                                                         std::map<std::string, std::string> env,
                                                         bool container) const;
  // As Ensure(), for an image worker: `container` runs (the OCI runtime in the foreground) a
  // container whose init is the template: made with id NewProcessId(key) and the environment
  // TemplateEnvironment(key, ..., true). False when it was not taken (a template of `key`
  // exists or failed, or its socket cannot be made): the caller removes what it prepared.
  bool EnsureContainer(const std::string& key, const std::string& endpoint_id, int64_t version,
                       const ProcessSpec& container, bool host_network = false);
  // Reads what container templates sent since (their workers' ends) and hands it to the
  // runtime's external exits; call before ProcessRuntime::Reap().
  void ReadReports();

  // Restores every snapshot on disk that has no template (one after the other, in the
  // background), e.g. when the agent starts.
  void RestoreAll();

  // Forks `worker` from the ready template of `key`; the runtime owns the new process under
  // worker.id. On failure the template is dropped (it is restored or started again later).
  Result<int> Fork(const std::string& key, const ProcessSpec& worker);

  // Keeps the templates and snapshots of the endpoint versions in `live` (endpoint id ->
  // version) and drops every other: a new version was deployed, the endpoint was deleted or
  // its flashboot turned off.
  void Retain(const std::map<std::string, int64_t>& live);

  // A template's process ended (ids for which OwnsProcess() holds).
  void OnExit(const ProcessExit& exit);
  // A template's output line; the last ones are logged when the template fails.
  void OnLog(const LogLine& line);

  // Accepts connections and handshakes, moves checkpoints and restores along, enforces
  // timeouts and budgets. Returns true when a report changed.
  bool Step();

  std::vector<TemplateReport> Reports() const;
  const StartCounters& counters() const { return counters_; }

 private:
  struct Template;
  struct Snapshot {
    std::string endpoint_id;
    int64_t version = 0;
    double cpu = 0;
    int64_t memory_mb = 0;
    int64_t bytes = 0;
    int64_t used_ms = 0;
    bool host_network = false;  // its template's (as Ensure() was told; not kept on disk)
  };
  // A checkpoint or restore on the background thread.
  struct Job {
    std::string key;
    bool restore = false;
    std::future<Result<int>> result;  // restore: the pid; checkpoint: 0
  };
  // A template that Step() drops once its pass over templates_ is done (Drop() erases from it).
  struct PendingDrop {
    std::string key, why;
    bool counted = true;  // a template failure
    bool forget_snapshot = false;
  };

  std::string SnapshotDir(const std::string& key) const;
  std::string SocketName(const std::string& key) const;
  // A template of `key` listening on its socket, in templates_; null (logged) if it cannot.
  // In a network namespace of its own (made here) unless `host_network`.
  Template* Listen(const std::string& key, const std::string& endpoint_id, int64_t version,
                   const std::string& process_id, bool host_network);
  // The next line from t's connection that is not a worker's exit report (those are handed
  // over on the way), within the fork timeout.
  Result<std::string> ReadAnswer(Template& t);
  // Handles one report line of a container template; false if it is not one.
  bool HandleReport(Template& t, const std::string& line);
  // The worker that container template `t` forked, `ns_pid` in its container: registers its
  // end (ctx.external), moves it into its cgroups unless it `came_in` one made ahead, releases
  // the spare cgroup when `move_failed`, and continues it. Its pid here; Internal when it is not
  // a child of the container's init.
  Result<int> ContainerWorker(Template& t, int ns_pid, const LaunchContext& ctx, bool came_in,
                              bool move_failed);
  // The workers of container template `t` are gone with it (killed with its PID namespace).
  static void WorkersKilled(Template& t);
  void LoadSnapshots();
  void StartFresh(Template& t, const ProcessSpec& worker);
  // Restores t from its snapshot now, or queues it for the background thread. FailedPrecondition
  // when snapshots cannot be used here: the caller drops t and forgets its snapshot.
  Status StartRestore(Template& t);
  void Accept(Template& t);
  // Asks the ready template to park for its checkpoint (the caller checks SnapshotsUsable()).
  // An error when it cannot be asked: the caller drops it.
  Status BeginCheckpoint(Template& t);
  // Whether the snapshotter can work here: Check()ed once, and logged when it cannot.
  bool SnapshotsUsable();
  // Makes a cgroup for the template's next spare (with a worker's limits) and tells the
  // template, so that a fork moves no process between cgroups; released when unused.
  void OfferSpareCgroup(Template& t);
  void ReleaseSpareCgroup(Template& t);
  // Moves template `t` along its phases (Step()): accepts its handshake, starts its checkpoint
  // or its queued restore, and queues it in `drops` when it is to go. True when a report
  // changed.
  bool Advance(Template& t, int64_t now, std::vector<PendingDrop>* drops);
  // Whether the ready template `t` is to be checkpointed now (SnapshotsUsable() is asked last).
  bool WantsCheckpoint(const Template& t);
  // Starts the dump of the parked (stopped) template `t` on the background thread.
  void StartDump(Template& t);
  // Takes the result of the finished background job: FinishRestore() adopts the restored
  // template (or retries, or deletes its snapshot), FinishCheckpoint() moves the snapshot into
  // place and continues the template. `t`: the job's template, null if dropped meanwhile.
  void FinishJob();
  void FinishRestore(const std::string& key, Result<int> r, Template* t);
  void FinishCheckpoint(const std::string& key, Result<int> r, Template* t);
  // Stops and forgets a template. `key` is taken by value: callers pass keys that live in the
  // template or in the map entry this erases.
  void Drop(std::string key, const std::string& why, bool failed);
  void DeleteSnapshot(const std::string& key);
  void EnforceBudgets();
  // Evicts ready templates, least recently used first, until `kb` of PSS are freed.
  void EvictTemplates(int64_t kb, const std::string& why);
  // Deletes snapshots, least recently used first, until `bytes` are freed.
  void EvictSnapshots(int64_t bytes, const std::string& why);

  const Clock* clock_;
  ProcessRuntime* runtime_;
  Snapshotter* snapshotter_;
  TemplateOptions options_;
  HostProbe probe_;
  std::optional<bool> criu_usable_;  // Check() once, on the first checkpoint or restore
  std::map<std::string, std::unique_ptr<Template>> templates_;
  // Container templates dropped while workers of theirs ran, by process id: they exit after
  // their last worker.
  std::map<std::string, std::unique_ptr<Template>> retiring_;
  std::map<std::string, Snapshot> snapshots_;
  std::map<std::string, std::string> failed_;  // key -> why its template failed
  std::set<std::string> no_snapshot_;          // keys whose checkpoint failed or is too big
  // Restores that found their pid still taken (the original's zombie not yet reaped by its
  // parent): key -> {when to try again, tries so far}.
  std::map<std::string, std::pair<int64_t, int>> restore_retry_;
  std::optional<Job> job_;
  int64_t last_budget_check_ms_ = 0;
  StartCounters counters_;
};

// PSS of `pid` in KiB from /proc/PID/smaps_rollup; 0 if it cannot be read.
int64_t ProcessPssKb(int pid);
// MemAvailable of /proc/meminfo in KiB.
int64_t AvailableMemoryKb();
// Free space (for unprivileged users) of the file system holding `dir`, in KiB.
int64_t FreeDiskKb(const std::string& dir);

}  // namespace gantry::agent
