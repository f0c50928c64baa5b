#include "scheduling/placement.h"

#include <algorithm>
#include <cctype>
#include <map>

namespace gantry::scheduling {

static std::string Lower(std::string s) {
  for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

bool GpuTypeMatches(const std::string& requested, const std::string& model) {
  if (requested == model) return true;
  std::string r = Lower(requested), m = Lower(model);
  return !r.empty() && m.find(r) != std::string::npos;
}

std::string TemplateCacheKey(const std::string& endpoint_id, int64_t version) {
  return "template:" + endpoint_id + "@" + std::to_string(version);
}

std::string SnapshotCacheKey(const std::string& endpoint_id, int64_t version) {
  return "snapshot:" + endpoint_id + "@" + std::to_string(version);
}

bool NodeCouldRun(const EndpointSpec& spec, const std::vector<std::string>& gpu_models) {
  for (const std::string& type : spec.gpu_type_ids) {
    if (type == "cpu") return true;
    int matching = 0;
    for (const auto& model : gpu_models) matching += GpuTypeMatches(type, model) ? 1 : 0;
    if (matching >= spec.gpu_count) return true;
  }
  return false;
}

namespace {

// "a GPU of type H100", "2 GPUs of type H100 or A100-80GB"
std::string GpuWanted(const EndpointSpec& spec) {
  std::string types;
  for (const auto& t : spec.gpu_type_ids) types += (types.empty() ? "" : " or ") + t;
  return (spec.gpu_count == 1 ? std::string("a GPU") : std::to_string(spec.gpu_count) + " GPUs") +
         " of type " + types;
}

// "n1: no GPUs", "n2: 1 x NVIDIA A100-SXM4-80GB"
std::string GpusOf(const NodeView& n) {
  if (n.gpus.empty()) return n.id + ": no GPUs";
  std::map<std::string, int> by_type;
  for (const auto& g : n.gpus) by_type[g.type]++;
  std::string out;
  for (const auto& [type, count] : by_type) {
    out += (out.empty() ? "" : ", ") + std::to_string(count) + " x " + type;
  }
  return n.id + ": " + out;
}

}  // namespace

std::string WhyUnplaceable(const EndpointSpec& spec, const std::vector<NodeView>& nodes) {
  std::vector<const NodeView*> live, with_gpus;
  for (const auto& n : nodes) {
    if (n.alive) live.push_back(&n);
  }
  if (live.empty()) {
    return "no live node is registered (run `gantry agent` on a machine, or use `gantry up`)";
  }
  for (const NodeView* n : live) {
    std::vector<std::string> models;
    for (const auto& g : n->gpus) models.push_back(g.type);
    if (NodeCouldRun(spec, models)) with_gpus.push_back(n);
  }
  if (with_gpus.empty()) {
    std::string nodes_text;
    for (const NodeView* n : live) nodes_text += (nodes_text.empty() ? "" : "; ") + GpusOf(*n);
    return "no live node has " + GpuWanted(spec) + " (" + nodes_text + ")";
  }
  int64_t largest = 0;
  for (const NodeView* n : with_gpus) {
    if (n->memory_mb >= spec.memory_mb) return "";
    largest = std::max(largest, n->memory_mb);
  }
  return "workers need " + std::to_string(spec.memory_mb) +
         " MB of memory (memoryMb); the largest live node that has their GPUs has " +
         std::to_string(largest) + " MB";
}

Result<Placement> Place(const EndpointSpec& spec, const std::vector<NodeView>& nodes,
                        const std::string& cache_key) {
  const std::string template_key = TemplateCacheKey(spec.id, spec.version);
  const std::string snapshot_key = SnapshotCacheKey(spec.id, spec.version);
  auto warmth = [&](const NodeView& n) {
    if (n.cached.count(template_key)) return 3;
    if (n.cached.count(snapshot_key)) return 2;
    return !cache_key.empty() && n.cached.count(cache_key) ? 1 : 0;
  };
  for (const std::string& type : spec.gpu_type_ids) {
    const bool cpu = type == "cpu";
    const NodeView* best = nullptr;
    std::vector<int> best_gpus;
    for (const auto& n : nodes) {
      if (!n.alive || n.memory_mb - n.memory_used_mb < spec.memory_mb) continue;
      std::vector<int> free;
      if (!cpu) {
        for (const auto& g : n.gpus) {
          if (!g.used && GpuTypeMatches(type, g.type)) free.push_back(g.index);
        }
        if (static_cast<int>(free.size()) < spec.gpu_count) continue;
        free.resize(spec.gpu_count);
      }
      auto better = [&](const NodeView& a, const NodeView& b) {
        const int wa = warmth(a), wb = warmth(b);
        if (wa != wb) return wa > wb;
        return a.memory_mb - a.memory_used_mb > b.memory_mb - b.memory_used_mb;
      };
      if (!best || better(n, *best)) {
        best = &n;
        best_gpus = std::move(free);
      }
    }
    if (best) return Placement{best->id, type, std::move(best_gpus)};
  }
  std::string types;
  for (const auto& t : spec.gpu_type_ids) types += (types.empty() ? "" : ", ") + t;
  return ResourceExhausted("no node has room for a worker (" + types + " x" +
                           std::to_string(spec.gpu_count) + ", " + std::to_string(spec.memory_mb) +
                           " MB)");
}

}  // namespace gantry::scheduling
