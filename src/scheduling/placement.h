#pragma once
// Placement: which node runs a new worker, and on which GPUs. A pure function over a snapshot
// of the nodes, tested against fake inventories.
//
// GPU types are tried in the endpoint's order of preference; the first type that fits on some
// node wins (fallback). "cpu" is a type too: no GPU. Memory requests are counted against the
// node's memory; CPU requests are soft shares and never refuse a placement. Among nodes that
// fit, the warmest is preferred (DESIGN §4: a ready template of the endpoint's version, then a
// snapshot of it, then its bundle), then the one with the most free memory.

#include <cstdint>
#include <set>
#include <string>
#include <vector>

#include "common/status.h"
#include "scheduling/endpoint_spec.h"

namespace gantry::scheduling {

struct GpuSlot {
  int index = 0;
  std::string type;  // e.g. "H100", "A100-80GB"
  bool used = false;
};

struct NodeView {
  std::string id;
  bool alive = true;
  int64_t memory_mb = 0;
  int64_t memory_used_mb = 0;  // by the workers placed on it
  std::vector<GpuSlot> gpus;
  // What it holds: bundle digests, TemplateCacheKey()s and SnapshotCacheKey()s.
  std::set<std::string> cached;
};

struct Placement {
  std::string node_id;
  std::string gpu_type;  // "cpu" for none
  std::vector<int> gpu_indexes;
};

// Does the node's GPU model name match a requested type? Exact, or the request appears in the
// model name as NVML reports it ("NVIDIA H100 80GB HBM3" matches "H100"), case-insensitively.
bool GpuTypeMatches(const std::string& requested, const std::string& model);

// Could a node with GPUs of these models ever run a worker of `spec` (one of its gpuTypeIds is
// "cpu", or the node has gpuCount GPUs of one of them, busy or not)?
bool NodeCouldRun(const EndpointSpec& spec, const std::vector<std::string>& gpu_models);

// Why no live node among `nodes` could ever run a worker of `spec`, whatever runs there now
// (its GPU types and count, its memory); "" when one could. E.g. "no live node has a GPU of
// type H100 or A100-80GB (n1: no GPUs)". Only the nodes' inventories count, not their use.
std::string WhyUnplaceable(const EndpointSpec& spec, const std::vector<NodeView>& nodes);

// The keys under which a node reports a ready template, or a snapshot, of an endpoint version.
std::string TemplateCacheKey(const std::string& endpoint_id, int64_t version);
std::string SnapshotCacheKey(const std::string& endpoint_id, int64_t version);

// ResourceExhausted when nothing fits anywhere: the worker is throttled and its jobs wait.
// `cache_key`: the endpoint's bundle digest ("" for none).
Result<Placement> Place(const EndpointSpec& spec, const std::vector<NodeView>& nodes,
                        const std::string& cache_key);

}  // namespace gantry::scheduling
