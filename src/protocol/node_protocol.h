#pragma once
// The node protocol (DESIGN §2.4): what a server and its agents say to each other, as types and
// their JSON codecs. The one place its field names and paths are written; the server (api,
// scheduling) and the agent both use it, and the agent needs nothing else of the server.
//
// Level-triggered, like Kubernetes: the agent registers its node (NodeInventory), long-polls its
// Assignment (every worker it should run, with a version) and reports a NodeStatus (each
// worker's state, what it caches) with every heartbeat, and ships worker log lines. Either side
// may restart at any time.
//
// Routes (all with the node's credential):
//   POST /v1/nodes/{node}                              NodeInventory -> the node as listed
//   GET  /v1/nodes/{node}/assignment?version=V&wait=MS -> Assignment (when its version != V, or
//                                                         when MS pass); 404: register again
//   POST /v1/nodes/{node}/status                       NodeStatus -> {}
//   POST /v1/nodes/{node}/logs                         LogBatch -> {}
//
// Decoders are lenient where the protocol has always been: a missing field takes its default and
// an entry of the wrong shape in a list is skipped; a body that is not a JSON object is
// InvalidArgument. Encoders write every field.

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/json.h"
#include "common/status.h"

namespace gantry::protocol {

// ---- Registration ----------------------------------------------------------------------------

struct GpuDevice {
  int index = 0;
  std::string type;  // model name, e.g. "NVIDIA H100 80GB HBM3" or a fake "H100"
  std::string uuid;
  bool operator==(const GpuDevice&) const = default;
};

// How the node runs workers, for operators (GET /v1/nodes) and tests: facts the agent found at
// start, which used to be only in its log.
struct NodeRuntime {
  std::string oci_runtime;             // "crun", "runc", or "" when container images are off
  std::vector<std::string> oci_notes;  // why a preferred OCI runtime was passed over
  std::string limits;                  // how workers' limits are applied, or why they are not
  std::string sandbox;                 // whom process workers run as (WorkerSandbox::describe)
  std::string
      network;  // workers' network: their own namespaces (WorkerNetwork::describe) or why not
  bool operator==(const NodeRuntime&) const = default;
};

struct NodeInventory {
  std::string name;
  double cpu_cores = 0;
  int64_t memory_mb = 0;
  std::vector<GpuDevice> gpus;
  NodeRuntime runtime;
  bool operator==(const NodeInventory&) const = default;
};

// ---- Assignment (server -> agent) ------------------------------------------------------------

// A container image and how to reach its registry: what an endpoint spec names, and what a node
// is sent with each worker of it and each image to pull ahead. "" image: a process worker.
struct ImageAccess {
  std::string image;                                 // "registry/name:tag"; "" for none
  std::string registry_username, registry_password;  // registryAuth; the password is secret
  bool insecure_registry = false;                    // plain HTTP to a registry not on loopback
  bool operator==(const ImageAccess&) const = default;
};

// One worker an agent should run.
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
  // The worker shares the node's network namespace (the spec's hostNetwork) instead of having
  // one of its own.
  bool host_network = false;
  bool operator==(const WorkerAssignment&) const = default;
};

// An image a node should hold before any worker of it starts there: the agent pulls it when the
// endpoint is deployed (so that the CLI can show the pull, and a first start does not wait for
// it) and reports the pull's progress in its NodeStatus (images).
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
  bool has_images = false;  // decoded: the server sent images
  // Endpoint id -> current version, for every endpoint with flashboot: the agent drops
  // templates and snapshots of any other endpoint or version.
  std::map<std::string, int64_t> template_versions;
  bool has_template_versions = false;  // decoded: the server sent templateVersions
  bool operator==(const Assignment&) const = default;
};

// ---- Status (agent -> server) ----------------------------------------------------------------

// kStarting: assigned, its process not started yet (a pull or a template to wait for).
enum class WorkerRunState { kStarting, kRunning, kExited };
const char* WorkerRunStateName(WorkerRunState s);  // "starting", "running", "exited"

// How a worker's process was started (DESIGN §4); kNone until it was.
enum class StartPath { kNone, kFull, kFork, kRestore };
const char* StartPathName(StartPath p);  // "", "full", "fork", "restore"

// An agent's view of one of its workers.
struct WorkerReport {
  std::string worker_id;
  WorkerRunState state = WorkerRunState::kStarting;
  int64_t received_ms = 0;
  int64_t spawned_ms = 0;
  int exit_code = 0;
  std::string error;  // why it exited or failed to start
  StartPath start_path = StartPath::kNone;
  std::string start_note;  // why a faster path was not taken ("" when none was at hand)
  bool operator==(const WorkerReport&) const = default;
};

// A template's state: kNone when the node holds only its snapshot.
enum class TemplateState { kNone, kStarting, kReady, kBusy };
const char* TemplateStateName(TemplateState s);  // "", "starting", "ready", "busy"

// A template of an endpoint version, or its snapshot, held by the node.
struct TemplateReport {
  std::string endpoint_id;
  int64_t version = 0;
  TemplateState state = TemplateState::kNone;
  int pid = 0;
  int64_t memory_mb = 0;  // PSS at the last budget check
  int64_t forks = 0;
  bool snapshot = false;
  int64_t snapshot_mb = 0;
  bool container = false;  // the template runs inside a container of the endpoint's image
  bool operator==(const TemplateReport&) const = default;
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
  bool operator==(const StartCounters&) const = default;
};

enum class PullState { kQueued, kPulling, kReady, kFailed };
const char* PullStateName(PullState s);  // "queued", "pulling", "ready", "failed"

// The node's prefetch of an image for one generation of an assignment's ImagePrefetch.
struct ImagePullReport {
  std::string image;
  std::string generation;  // of the ImagePrefetch this pull is for
  PullState state = PullState::kQueued;
  std::string detail;  // the pull's last event, or why it failed
  int64_t updated_ms = 0;
  int64_t fetches = 0;  // how many times the node has fetched this image since its agent started
  bool operator==(const ImagePullReport&) const = default;
};

// The agent's heartbeat: its workers and what it holds. Templates and images are absent
// (nullopt) when the node has templates, or container images, turned off.
struct NodeStatus {
  std::vector<WorkerReport> workers;
  std::vector<std::string> bundles;  // code bundle digests unpacked on the node
  std::optional<std::vector<TemplateReport>> templates;
  std::optional<StartCounters> start_counters;  // present with templates
  std::optional<std::vector<ImagePullReport>> images;
  bool operator==(const NodeStatus&) const = default;
};

// ---- Logs (agent -> server) ------------------------------------------------------------------

struct LogLine {
  std::string worker_id;
  bool stderr_stream = false;
  std::string text;
  int64_t at_ms = 0;  // when the agent read it (0: when the server receives it)
  bool operator==(const LogLine&) const = default;
};

// ---- Codecs ----------------------------------------------------------------------------------

json::object Encode(const NodeInventory& inventory);
json::object Encode(const NodeRuntime& runtime);
json::object Encode(const Assignment& assignment);
json::object Encode(const NodeStatus& status);
json::object Encode(const std::vector<LogLine>& lines);  // {"lines": [...]}

// The parts of a NodeStatus the node listing shows beside the inventory: "templates",
// "startCounters" and "images", each when present, added to `o`.
void AddAgentParts(const NodeStatus& status, json::object* o);
// The fields of one worker's or prefetch's image access (image, registryAuth,
// insecureRegistry), added to `o`.
void AddImageAccess(const ImageAccess& access, json::object* o);

Result<NodeInventory> DecodeInventory(const json::value& body);
Result<Assignment> DecodeAssignment(const json::value& body);
Result<NodeStatus> DecodeStatus(const json::value& body);
Result<std::vector<LogLine>> DecodeLogs(const json::value& body);
// The same, from the text of a body.
template <typename Decode>
auto DecodeText(std::string_view text, Decode decode) -> decltype(decode(json::value())) {
  auto v = ParseJson(text);
  if (!v.ok()) return v.status();
  return decode(*v);
}

// ---- Paths -----------------------------------------------------------------------------------

std::string NodePath(const std::string& node_id);  // "/v1/nodes/{node}"
std::string AssignmentPath(const std::string& node_id, int64_t known_version, int64_t wait_ms);
std::string StatusPath(const std::string& node_id);
std::string LogsPath(const std::string& node_id);

}  // namespace gantry::protocol
