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
#include "scheduling/autoscaler.h"
#include "scheduling/metering.h"
#include "scheduling/placement.h"
#include "scheduling/registry.h"

namespace gantry::scheduling {

struct GpuDevice {
  int index = 0;
  std::string type;  // model name, e.g. "NVIDIA H100 80GB HBM3" or a fake "H100"
  std::string uuid;
};

struct NodeInventory {
  std::string name;
  double cpu_cores = 0;
  int64_t memory_mb = 0;
  std::vector<GpuDevice> gpus;
};

// One worker an agent should run.
// ImageAccess: a container worker's image (issue 5); "" for a process worker.
struct WorkerAssignment : ImageAccess {
  std::string worker_id;
  std::string endpoint_id;
  int64_t endpoint_version = 0;
  std::vector<std::string> command;
  std::string workdir;                     // relative to the bundle's root when there is a bundle
  std::string bundle;                      // code bundle digest; "" for none
  std::map<std::string, std::string> env;  // empty when the server no longer knows the secret
  std::string gpu_type;
  std::vector<int> gpus;
  double cpu = 0;
  int64_t memory_mb = 0;
  bool use_template = true;  // the agent may fork it from a template (DESIGN §4)
  // A container worker's filesystem options.
  std::string volume, volume_mount_path;
  bool read_only_rootfs = false;
};

// An image a node should hold before any worker of it starts there: the agent pulls it when the
// endpoint is deployed (so that the CLI can show the pull, and a first start does not wait for
// it) and reports the pull's progress in its node status ("images").
struct ImagePrefetch : ImageAccess {
  // "endpoint:version,..." of the endpoints that use the image: a redeploy changes it, and the
  // agent then fetches the image again (a "latest" tag may have moved) and reports that pull.
  std::string generation;
  bool operator==(const ImagePrefetch&) const = default;
};

struct Assignment {
  int64_t version = 0;
  std::vector<WorkerAssignment> workers;
  // The images of every endpoint with an image that could run on this node (a GPU type it
  // has, or "cpu"), sorted by image, each once.
  std::vector<ImagePrefetch> images;
  bool has_images = false;  // parsed: the server sent images
  // Endpoint id -> current version, for every endpoint with flashboot: the agent drops
  // templates and snapshots of any other endpoint or version.
  std::map<std::string, int64_t> template_versions;
  bool has_template_versions = false;  // parsed: the server sent template_versions
};

// An agent's view of one of its workers.
struct WorkerReport {
  std::string worker_id;
  std::string state;  // "running" or "exited"
  int64_t received_ms = 0;
  int64_t spawned_ms = 0;
  int exit_code = 0;
  std::string error;       // why it exited or failed to start
  std::string start_path;  // "fork", "restore" or "full"
  std::string start_note;  // why a faster path was not taken ("" when none was at hand)
};

struct SchedulerOptions {
  int64_t node_lost_ms = 15'000;     // A silent node's workers are lost after. Default: 15 s.
  int64_t start_backoff_ms = 1'000;  // First retry delay after a failed start; doubles.
  int64_t max_start_backoff_ms = 60'000;
  int unhealthy_after_failures = 3;  // Consecutive failed starts make an endpoint unhealthy.
  int64_t stop_grace_ms = 10'000;    // Given to the agent with each stop. Default: 10 s.
};

// Builds a new worker's environment (the RunPod variables and the endpoint's env).
using WorkerEnvBuilder = std::function<std::map<std::string, std::string>(
    const EndpointSpec& spec, const WorkerInfo& worker, const std::string& secret)>;

struct EndpointHealth {
  int64_t throttled = 0;   // workers wanted but placed nowhere
  bool unhealthy = false;  // its workers keep failing to start
  int consecutive_failures = 0;
  std::string last_error;
  std::vector<std::string> last_log;  // the last lines of the last failed worker
};

class Scheduler {
 public:
  Scheduler(const Clock* clock, jobs::JobManager* jobs, EndpointRegistry* endpoints,
            WorkerRegistry* workers, SchedulerOptions options, WorkerEnvBuilder env_builder,
            Metering* metering = nullptr);

  // Node protocol. A node keeps its id across restarts of either side.
  Status RegisterNode(const std::string& node_id, NodeInventory inventory);
  // Calls `cb` with the node's assignment once its version differs from `known_version`, or
  // when `wait_ms` passes (with the current one).
  void PollAssignment(const std::string& node_id, int64_t known_version, int64_t wait_ms,
                      std::function<void(const Assignment*)> cb);
  // `cached_bundles`: the bundle digests, templates and snapshots the node holds (placement
  // prefers such nodes; see placement.h). `agent_status`: the agent's "templates",
  // "startCounters" and "images" as it reported them, shown by NodeJson() (and "images" by
  // ImagePulls()).
  Status Report(const std::string& node_id, const std::vector<WorkerReport>& workers,
                const std::map<std::string, std::vector<std::string>>& log_tails,
                const std::set<std::string>& cached_bundles = {}, json::object agent_status = {});

  // Stops a worker for good (it ignored a stop): its node's agent kills the process.
  void Kill(const std::string& worker_id, const std::string& why);
  // Re-evaluates one endpoint now (a job arrived) or every endpoint (periodic).
  void Evaluate(const std::string& endpoint_id);
  // An endpoint was created, changed or deleted (EndpointRegistry's change listener): every
  // node's assignment is rebuilt at once (its template versions and images to pull, which
  // gantry deploy follows), and the endpoint's workers are evaluated (old versions drain).
  void EndpointChanged(const std::string& endpoint_id);
  void Tick();

  const EndpointHealth& Health(const std::string& endpoint_id);
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
    std::map<std::string, WorkerReport> reports;
    std::set<std::string> cached_bundles;
    json::object agent_status;  // the agent's own parts of its last status report
    struct Waiter {
      int64_t deadline_ms;
      std::function<void(const Assignment*)> cb;
    };
    std::vector<Waiter> waiters;
  };
  void Rebuild(Node* node);  // recomputes the assignment; bumps the version when it changed
  void StartWorker(const EndpointSpec& spec);
  void StopWorker(WorkerInfo* w, const std::string& why);
  void WorkerExited(WorkerInfo* w, const WorkerReport& r, const std::vector<std::string>& tail);
  std::vector<NodeView> Views() const;

  const Clock* clock_;
  jobs::JobManager* jobs_;
  EndpointRegistry* endpoints_;
  WorkerRegistry* workers_;
  SchedulerOptions options_;
  WorkerEnvBuilder env_builder_;
  Metering* metering_;  // may be null
  std::map<std::string, Node> nodes_;
  std::map<std::string, EndpointHealth> health_;
  std::map<std::string, int64_t> next_start_ms_;  // endpoint -> no start before (backoff)
};

}  // namespace gantry::scheduling
