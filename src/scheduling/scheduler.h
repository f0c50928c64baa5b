#pragma once
// The scheduler: nodes, their assignments, and the autoscaling loop that fills them.
//
// Node protocol (DESIGN §2.4), level-triggered: an agent registers its node and inventory,
// long-polls its assignment (every worker it should run, with a version) and reports the state
// of its workers. Either side may restart; the agent reconciles toward the latest assignment.
//
// Threading: loop thread only, like the JobManager and the registries it drives.

#include <functional>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "common/env.h"
#include "jobs/job_manager.h"
#include "protocol/node_protocol.h"
#include "scheduling/autoscaler.h"
#include "scheduling/metering.h"
#include "scheduling/placement.h"
#include "scheduling/registry.h"
#include "scheduling/worker_env.h"

namespace gantry::scheduling {

using protocol::Assignment;
using protocol::ImagePrefetch;
using protocol::NodeInventory;
using protocol::NodeStatus;
using protocol::WorkerAssignment;
using protocol::WorkerReport;

struct SchedulerOptions {
  int64_t node_lost_ms = 15'000;     // A silent node's workers are lost after. Default: 15 s.
  int64_t start_backoff_ms = 1'000;  // First retry delay after a failed start; doubles.
  int64_t max_start_backoff_ms = 60'000;
  int64_t stop_grace_ms = 10'000;  // Given to the agent with each stop. Default: 10 s.
};

struct EndpointHealth {
  int64_t throttled = 0;   // workers wanted but placed nowhere
  bool unhealthy = false;  // its workers keep failing to start (spec.max_failed_starts in a row)
  int consecutive_failures = 0;  // failed starts in a row of `version`
  int64_t version = 0;           // the endpoint version these counts are of
  std::string last_error;
  std::vector<std::string> last_log;  // the last lines of the last failed worker
};

// Observes `jobs` (a queued job is placed at once; an overdue worker is killed) and `endpoints`
// (a deploy rebuilds every assignment at once) from its construction to its destruction.
class Scheduler : public jobs::JobObserver, public EndpointObserver {
 public:
  Scheduler(const Clock* clock, jobs::JobManager* jobs, EndpointRegistry* endpoints,
            WorkerRegistry* workers, SchedulerOptions options, const WorkerEnvFactory* worker_env,
            Metering* metering = nullptr);
  ~Scheduler() override;
  Scheduler(const Scheduler&) = delete;
  Scheduler& operator=(const Scheduler&) = delete;

  void OnJobQueued(const std::string& endpoint_id) override { Evaluate(endpoint_id); }
  void OnWorkerOverdue(const std::string& worker_id, const std::string& why) override {
    Kill(worker_id, why);
  }
  void OnEndpointChanged(const std::string& endpoint_id) override { EndpointChanged(endpoint_id); }

  // Node protocol. A node keeps its id across restarts of either side.
  Status RegisterNode(const std::string& node_id, NodeInventory inventory);
  // Calls `cb` with the node's assignment once its version differs from `known_version`, or
  // when `wait_ms` passes (with the current one).
  void PollAssignment(const std::string& node_id, int64_t known_version, int64_t wait_ms,
                      std::function<void(const Assignment*)> cb);
  // The node's status: its workers' states; the bundles, templates and snapshots it holds
  // (placement prefers such nodes; see placement.h); its templates, start counters and image
  // pulls as NodeJson() shows them (and ImagePulls() the pulls). `log_tails`: the last lines of
  // the workers it reports exited, for the endpoint's health.
  Status Report(const std::string& node_id, const NodeStatus& status,
                const std::map<std::string, std::vector<std::string>>& log_tails);

  // Stops a worker for good (it ignored a stop): its node's agent kills the process.
  void Kill(const std::string& worker_id, const std::string& why);
  // Re-evaluates one endpoint now (a job arrived) or every endpoint (periodic).
  void Evaluate(const std::string& endpoint_id);
  // An endpoint was created, changed or deleted (OnEndpointChanged): every node's assignment is
  // rebuilt at once (its template versions and images to pull, which gantry deploy follows), and
  // the endpoint's workers are evaluated (old versions drain).
  void EndpointChanged(const std::string& endpoint_id);
  void Tick();

  const EndpointHealth& Health(const std::string& endpoint_id);
  // Why no live node could ever run a worker of the endpoint (placement.h WhyUnplaceable); ""
  // when one could, or when its workers are started by hand. With `live_nodes_only`, also ""
  // while no node is live at all (one may be about to register: `gantry up` at its start).
  std::string Unplaceable(const std::string& endpoint_id, bool live_nodes_only = false) const;
  std::vector<std::string> NodeIds() const;
  json::object NodeJson(const std::string& node_id) const;
  // The prefetch of `image` on each live node whose assignment lists it (ImagePrefetch): the
  // node's last report of it for the current generation ({"nodeId", "state", "detail",
  // "updatedAt"}; state "pulling", "ready" or "failed"), or state "queued" until the node has
  // reported on that generation.
  json::array ImagePulls(const std::string& image) const;

 private:
  struct Node {
    std::string id;
    NodeInventory inventory;
    int64_t last_seen_ms = 0;
    bool alive = true;
    Assignment assignment;
    std::set<std::string> cached;  // bundle digests, TemplateCacheKey()s, SnapshotCacheKey()s
    NodeStatus status;             // the last one it reported
    struct Waiter {
      int64_t deadline_ms;
      std::function<void(const Assignment*)> cb;
    };
    std::vector<Waiter> waiters;
  };
  void Rebuild(Node* node);  // recomputes the assignment; bumps the version when it changed
  void StartWorker(const EndpointSpec& spec);
  // Stops a worker for a failure (a warning and its last error) at once; see
  // WorkerRegistry::Stop.
  void StopWorker(WorkerInfo* w, const std::string& why);
  // A normal stop (idleness, a new version, a recycle): no warning, no error. The worker leaves
  // its node's assignment (its agent sends SIGTERM) and keeps its key until its node reports
  // the process gone (EndStopsOfGoneWorkers); ordering in docs/decisions.md.
  void RetireWorker(WorkerInfo* w, const std::string& reason);
  // Ends the normal stops of the node's workers that its status no longer lists as running
  // (the agent drops a worker it no longer runs once its process has exited).
  void EndStopsOfGoneWorkers(const std::string& node_id, const NodeStatus& status);
  void WorkerExited(WorkerInfo* w, const WorkerReport& r, const std::vector<std::string>& tail);
  // A worker of the endpoint's current version failed to start: backoff, health, and once
  // spec.max_failed_starts have failed in a row, the queued jobs fail with `why` and `tail`.
  void FailedStart(const EndpointSpec& spec, const std::string& why,
                   const std::vector<std::string>& tail);
  std::vector<NodeView> Views() const;
  // A node's capacity (memory, GPUs, liveness), none of it in use: what WhyUnplaceable needs.
  static NodeView CapacityView(const std::string& id, const Node& n);

  const Clock* clock_;
  jobs::JobManager* jobs_;
  EndpointRegistry* endpoints_;
  WorkerRegistry* workers_;
  SchedulerOptions options_;
  const WorkerEnvFactory* worker_env_;
  Metering* metering_;  // may be null
  std::map<std::string, Node> nodes_;
  std::map<std::string, EndpointHealth> health_;
  std::map<std::string, int64_t> next_start_ms_;  // endpoint -> no start before (backoff)
};

}  // namespace gantry::scheduling
