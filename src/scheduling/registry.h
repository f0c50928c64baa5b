#pragma once
// Endpoint and worker bookkeeping for the server. Loop thread only, like the JobManager.

#include <map>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "common/env.h"
#include "jobs/job_manager.h"
#include "scheduling/endpoint_spec.h"
#include "store/store.h"

namespace gantry::scheduling {

// Hears of every endpoint created, changed or deleted (not of those Load() reads), on the loop
// thread. Subscribes with EndpointRegistry::AddObserver at its construction.
class EndpointObserver {
 public:
  virtual ~EndpointObserver() = default;
  virtual void OnEndpointChanged(const std::string& endpoint_id) = 0;
};

// Endpoints: create, update, delete, persisted as "endpoint" objects. Each change is pushed to
// the JobManager's per-endpoint queue config.
class EndpointRegistry {
 public:
  EndpointRegistry(const Clock* clock, store::Store* store, jobs::JobManager* jobs);
  Status Load();
  // `durable` runs once the change is in the store.
  Result<EndpointSpec> Create(const json::value& body, std::function<void(Status)> durable);
  Result<EndpointSpec> Update(const std::string& id, const json::value& patch,
                              std::function<void(Status)> durable);
  Status Delete(const std::string& id, std::function<void(Status)> durable);
  const EndpointSpec* Get(const std::string& id) const;
  std::vector<const EndpointSpec*> List() const;
  // `observer` (not owned) is told of each Create, Delete and Update that changed something
  // until it is removed (before it is destroyed). Not from within a callback.
  void AddObserver(EndpointObserver* observer) { observers_.push_back(observer); }
  void RemoveObserver(EndpointObserver* observer) { std::erase(observers_, observer); }

 private:
  void Save(const EndpointSpec& spec, std::function<void(Status)> durable);
  const Clock* clock_;
  store::Store* store_;
  jobs::JobManager* jobs_;
  void Changed(const std::string& id);
  std::map<std::string, EndpointSpec> endpoints_;
  std::vector<EndpointObserver*> observers_;
};

enum class WorkerState { kInitializing, kReady, kUnhealthy, kStopped };
const char* WorkerStateName(WorkerState s);

struct WorkerInfo {
  std::string id;
  std::string endpoint_id;
  std::string secret_hash;  // SHA-256 of the worker's secret; the secret is never stored
  int64_t created_ms = 0;
  int64_t last_seen_ms = 0;  // any request from it
  int64_t last_ping_ms = 0;
  int64_t ready_ms = 0;     // its first job-take
  bool heard_from = false;  // any request from it since it was registered (or loaded)
  WorkerState state = WorkerState::kInitializing;
  std::string last_error;   // why it failed: lost, crashed, killed (never a normal stop's reason)
  std::string stop_reason;  // why it was stopped, normal or not ("" until then)
  // A normal stop (BeginStop) under way since (ms; 0: none): the worker is off its node's
  // assignment and takes no new job, but its key works until EndStop.
  int64_t stopping_ms = 0;
  bool recycle = false;  // it asked to be recycled (stopPod)
  // Set for workers the scheduler placed on a node (empty for workers started by hand).
  std::string node_id;
  std::string gpu_type;
  std::vector<int> gpus;
  int64_t endpoint_version = 0;
  bool draining = false;  // chosen to stop: it gets no new jobs
  // Cold-start phases, ms: placed -> agent received -> process spawned -> ready (first take).
  int64_t placed_ms = 0;
  int64_t received_ms = 0;
  int64_t spawned_ms = 0;
  protocol::StartPath start_path = protocol::StartPath::kNone;  // until the agent started it
  std::string start_note;                                       // why a faster path was not taken
  std::string secret;  // in memory only, for the agent's assignment; "" after a restart
};

// The placement fields of a worker placed by the scheduler (nodeId, gpuType, gpus,
// endpointVersion), as both its stored record and the API show them.
void AddPlacementJson(const WorkerInfo& w, json::object* o);

struct WorkerCounts {
  int64_t idle = 0, initializing = 0, ready = 0, running = 0, throttled = 0, unhealthy = 0;
};

// Hears of every worker that becomes STOPPED, on the loop thread (metering ends its time there).
class WorkerObserver {
 public:
  virtual ~WorkerObserver() = default;
  virtual void OnWorkerStopped(const WorkerInfo& worker) = 0;
};

struct WorkerOptions {
  int64_t ping_interval_ms = 10'000;  // RUNPOD_PING_INTERVAL given to workers. Default: 10 s.
  int lost_after_intervals = 3;       // Default: 3 silent intervals make a worker lost.
  int64_t forget_after_ms = 10 * 60 * 1000;  // Unhealthy/stopped workers are dropped after.
  // A worker not yet heard from (its process imports and loads its model before the SDK
  // starts pinging) is lost only after this. Default: 10 min.
  int64_t start_timeout_ms = 10 * 60 * 1000;
  // A normal stop whose end no node reports (the node vanished) ends after this, so that no
  // key stays valid for good. Default: 30 s (an agent kills a worker 10 s after its SIGTERM
  // and reports every second).
  int64_t stop_exit_grace_ms = 30'000;
};

class WorkerRegistry {
 public:
  WorkerRegistry(const Clock* clock, store::Store* store, jobs::JobManager* jobs,
                 WorkerOptions options);
  Status Load();
  // Registers a worker; returns it and its secret, which is shown only here.
  // `placed` (may be null) records the node and GPUs the scheduler chose.
  Result<std::pair<WorkerInfo, std::string>> Register(const std::string& endpoint_id,
                                                      std::function<void(Status)> durable,
                                                      const WorkerInfo* placed = nullptr);
  WorkerInfo* Get(const std::string& worker_id);
  // Saves the worker's record again (after its placement or phases changed).
  void Save(const WorkerInfo& w);
  // Checks `key` against the worker's secret. Unauthenticated: no valid key. PermissionDenied:
  // another worker's key. NotFound: no such worker. FailedPrecondition: the worker was stopped.
  Result<WorkerInfo*> Authenticate(const std::string& endpoint_id, const std::string& worker_id,
                                   const std::string& key);
  // Any authenticated request. `take` marks the worker ready (first job-take).
  void Seen(WorkerInfo* w, bool take);
  void Ping(WorkerInfo* w, const std::vector<std::string>& running);
  void MarkRecycle(const std::string& worker_id);
  // Stops the worker for a failure (`why` is logged as a warning and kept as its last error):
  // its jobs are released and its secret stops working at once. Until an agent runs it,
  // nothing kills the process itself. A worker whose normal stop is under way ends it quietly
  // instead (EndStop): its node was lost, or the scheduler gave up on it.
  void Stop(const std::string& worker_id, const std::string& why);
  // Begins a normal stop (idleness, a new version, a recycle): logged at INFO, `reason` kept as
  // its stop reason, never as an error. It takes no new job (draining: job-take answers 204)
  // but its key keeps working, so that its process, which its agent now stops, meets no 401 on
  // its way out. Its record leaves the store at once (a restarted server does not run it).
  void BeginStop(const std::string& worker_id, const std::string& reason);
  // Ends a normal stop: the process is gone (its node reported it, or stop_exit_grace_ms
  // passed). The worker is STOPPED: its jobs are released, its secret stops working.
  void EndStop(const std::string& worker_id);
  void RemoveEndpoint(const std::string& endpoint_id);
  // `observer` (not owned) is told of each worker that stops until it is removed (before it is
  // destroyed). Not from within a callback.
  void AddObserver(WorkerObserver* observer) { observers_.push_back(observer); }
  void RemoveObserver(WorkerObserver* observer) { std::erase(observers_, observer); }
  // Marks workers whose pings stopped (or that never started) as lost, ends normal stops past
  // their grace, and forgets old dead ones.
  void Tick();

  // RunPod's worker counts; a worker being stopped counts in none.
  WorkerCounts Counts(const std::string& endpoint_id) const;
  std::vector<const WorkerInfo*> List(const std::string& endpoint_id) const;  // "" for all
  const WorkerOptions& options() const { return options_; }

 private:
  void Lose(WorkerInfo* w, WorkerState state, const std::string& why);
  // STOPPED for good: its jobs go back to the queue, its key stops working, observers hear.
  void MarkStopped(WorkerInfo* w, const std::string& why);
  const Clock* clock_;
  store::Store* store_;
  jobs::JobManager* jobs_;
  WorkerOptions options_;
  std::map<std::string, WorkerInfo> workers_;
  std::vector<WorkerObserver*> observers_;
  std::unordered_map<std::string, std::string> by_hash_;  // secret hash -> worker id
  // Keys already checked -> worker id (skips a SHA-256 per request). Bounded; cleared when a
  // worker is stopped or forgotten.
  std::unordered_map<std::string, std::string> checked_;
};

}  // namespace gantry::scheduling
