#include "protocol/node_protocol.h"

#include "http/http.h"

namespace gantry::protocol {
namespace {

// Reads the fields of one JSON object with the protocol's leniency: a missing field, or one of
// the wrong type, leaves the default.
class Fields {
 public:
  explicit Fields(const json::object& o) : o_(o) {}
  void Get(std::string_view k, std::string* out) const {
    if (auto* v = Find(o_, k); v && v->is_string()) *out = v->as_string();
  }
  void Get(std::string_view k, int64_t* out) const {
    if (auto* v = Find(o_, k)) *out = AsInt(*v).value_or(*out);
  }
  void Get(std::string_view k, int* out) const {
    int64_t n = *out;
    Get(k, &n);
    *out = static_cast<int>(n);
  }
  void Get(std::string_view k, double* out) const {
    if (auto* v = Find(o_, k); v && v->is_number()) *out = v->to_number<double>();
  }
  void Get(std::string_view k, bool* out) const {
    if (auto* v = Find(o_, k); v && v->is_bool()) *out = v->get_bool();
  }
  void Get(std::string_view k, std::vector<std::string>* out) const {
    if (auto* v = Find(o_, k); v && v->is_array()) {
      for (const auto& x : v->as_array()) {
        if (x.is_string()) out->emplace_back(x.as_string());
      }
    }
  }
  // Calls `fn(const json::object&)` for each object in the list `k`; other entries are skipped.
  template <typename Fn>
  void Each(std::string_view k, Fn fn) const {
    if (auto* v = Find(o_, k); v && v->is_array()) {
      for (const auto& x : v->as_array()) {
        if (x.is_object()) fn(x.as_object());
      }
    }
  }
  const json::object* Object(std::string_view k) const {
    auto* v = Find(o_, k);
    return v && v->is_object() ? &v->as_object() : nullptr;
  }
  bool Has(std::string_view k) const { return Find(o_, k) != nullptr; }

 private:
  const json::object& o_;
};

Result<const json::object*> AsObject(const json::value& body, const char* what) {
  if (!body.is_object()) return InvalidArgument(std::string(what) + " is not a JSON object");
  return &body.as_object();
}

json::array Strings(const std::vector<std::string>& v) {
  json::array a;
  for (const auto& s : v) a.emplace_back(s);
  return a;
}

// Parses `name` into the enum whose names `names` lists in order; false when unknown.
template <typename E, size_t N>
bool ParseName(const std::string& name, const char* const (&names)[N], E* out) {
  for (size_t i = 0; i < N; ++i) {
    if (name == names[i]) {
      *out = static_cast<E>(i);
      return true;
    }
  }
  return false;
}

constexpr const char* kWorkerRunStates[] = {"starting", "running", "exited"};
constexpr const char* kTemplateStates[] = {"", "starting", "ready", "busy"};
constexpr const char* kPullStates[] = {"queued", "pulling", "ready", "failed"};
constexpr const char* kStartPaths[] = {"", "full", "fork", "restore"};

ImageAccess DecodeImageAccess(const Fields& f) {
  ImageAccess a;
  f.Get("image", &a.image);
  if (const json::object* auth = f.Object("registryAuth")) {
    Fields(*auth).Get("username", &a.registry_username);
    Fields(*auth).Get("password", &a.registry_password);
  }
  f.Get("insecureRegistry", &a.insecure_registry);
  return a;
}

json::object EncodeWorker(const WorkerAssignment& w) {
  json::array gpus;
  for (int g : w.gpus) gpus.emplace_back(g);
  json::object o{{"workerId", w.worker_id},
                 {"endpointId", w.endpoint_id},
                 {"endpointVersion", w.endpoint_version},
                 {"command", Strings(w.command)},
                 {"workdir", w.workdir},
                 {"bundle", w.bundle},
                 {"env", StringMapJson(w.env)},
                 {"gpuType", w.gpu_type},
                 {"gpus", std::move(gpus)},
                 {"cpu", w.cpu},
                 {"memoryMb", w.memory_mb},
                 {"flashboot", w.use_template},
                 {"volume", w.volume},
                 {"volumeMountPath", w.volume_mount_path},
                 {"readOnlyRootfs", w.read_only_rootfs},
                 {"hostNetwork", w.host_network}};
  AddImageAccess(w, &o);
  return o;
}

WorkerAssignment DecodeWorker(const json::object& o) {
  Fields f(o);
  WorkerAssignment w;
  static_cast<ImageAccess&>(w) = DecodeImageAccess(f);
  f.Get("workerId", &w.worker_id);
  f.Get("endpointId", &w.endpoint_id);
  f.Get("endpointVersion", &w.endpoint_version);
  f.Get("command", &w.command);
  f.Get("workdir", &w.workdir);
  f.Get("bundle", &w.bundle);
  if (const json::object* env = f.Object("env")) {
    for (const auto& kv : *env) {
      if (kv.value().is_string()) w.env[std::string(kv.key())] = kv.value().as_string();
    }
  }
  f.Get("gpuType", &w.gpu_type);
  if (auto* g = Find(o, "gpus"); g && g->is_array()) {
    for (const auto& x : g->as_array()) w.gpus.push_back(static_cast<int>(AsInt(x).value_or(0)));
  }
  f.Get("cpu", &w.cpu);
  f.Get("memoryMb", &w.memory_mb);
  f.Get("flashboot", &w.use_template);
  f.Get("volume", &w.volume);
  f.Get("volumeMountPath", &w.volume_mount_path);
  f.Get("readOnlyRootfs", &w.read_only_rootfs);
  f.Get("hostNetwork", &w.host_network);
  return w;
}

json::object EncodeTemplate(const TemplateReport& t) {
  return json::object{{"endpointId", t.endpoint_id},
                      {"version", t.version},
                      {"state", TemplateStateName(t.state)},
                      {"pid", t.pid},
                      {"memoryMb", t.memory_mb},
                      {"forks", t.forks},
                      {"snapshot", t.snapshot},
                      {"snapshotMb", t.snapshot_mb},
                      {"container", t.container}};
}

json::object EncodeCounters(const StartCounters& c) {
  return json::object{{"forks", c.forks},
                      {"restores", c.restores},
                      {"forkFailures", c.fork_failures},
                      {"restoreFailures", c.restore_failures},
                      {"templateFailures", c.template_failures},
                      {"snapshotFailures", c.snapshot_failures},
                      {"evictions", c.evictions},
                      {"retirements", c.retirements}};
}

json::object EncodePull(const ImagePullReport& p) {
  return json::object{
      {"image", p.image},   {"generation", p.generation}, {"state", PullStateName(p.state)},
      {"detail", p.detail}, {"updatedAt", p.updated_ms},  {"fetches", p.fetches}};
}

std::optional<TemplateReport> DecodeTemplate(const json::object& o) {
  Fields f(o);
  TemplateReport t;
  std::string state;
  f.Get("endpointId", &t.endpoint_id);
  f.Get("version", &t.version);
  f.Get("state", &state);
  if (t.endpoint_id.empty() || !ParseName(state, kTemplateStates, &t.state)) return std::nullopt;
  f.Get("pid", &t.pid);
  f.Get("memoryMb", &t.memory_mb);
  f.Get("forks", &t.forks);
  f.Get("snapshot", &t.snapshot);
  f.Get("snapshotMb", &t.snapshot_mb);
  f.Get("container", &t.container);
  return t;
}

StartCounters DecodeCounters(const json::object& o) {
  Fields f(o);
  StartCounters c;
  f.Get("forks", &c.forks);
  f.Get("restores", &c.restores);
  f.Get("forkFailures", &c.fork_failures);
  f.Get("restoreFailures", &c.restore_failures);
  f.Get("templateFailures", &c.template_failures);
  f.Get("snapshotFailures", &c.snapshot_failures);
  f.Get("evictions", &c.evictions);
  f.Get("retirements", &c.retirements);
  return c;
}

std::optional<ImagePullReport> DecodePull(const json::object& o) {
  Fields f(o);
  ImagePullReport p;
  std::string state;
  f.Get("image", &p.image);
  f.Get("generation", &p.generation);
  f.Get("state", &state);
  if (p.image.empty() || !ParseName(state, kPullStates, &p.state)) return std::nullopt;
  f.Get("detail", &p.detail);
  f.Get("updatedAt", &p.updated_ms);
  f.Get("fetches", &p.fetches);
  return p;
}

}  // namespace

const char* WorkerRunStateName(WorkerRunState s) { return kWorkerRunStates[static_cast<int>(s)]; }
const char* TemplateStateName(TemplateState s) { return kTemplateStates[static_cast<int>(s)]; }
const char* PullStateName(PullState s) { return kPullStates[static_cast<int>(s)]; }
const char* StartPathName(StartPath p) { return kStartPaths[static_cast<int>(p)]; }

void AddImageAccess(const ImageAccess& a, json::object* o) {
  (*o)["image"] = a.image;
  (*o)["registryAuth"] =
      json::object{{"username", a.registry_username}, {"password", a.registry_password}};
  (*o)["insecureRegistry"] = a.insecure_registry;
}

// ---- Registration ----------------------------------------------------------------------------

json::object Encode(const NodeInventory& inv) {
  json::array gpus;
  for (const auto& g : inv.gpus) {
    gpus.push_back(json::object{{"index", g.index}, {"type", g.type}, {"uuid", g.uuid}});
  }
  return json::object{{"name", inv.name},
                      {"cpuCores", inv.cpu_cores},
                      {"memoryMb", inv.memory_mb},
                      {"gpus", std::move(gpus)},
                      {"runtime", Encode(inv.runtime)}};
}

json::object Encode(const NodeRuntime& rt) {
  return json::object{{"ociRuntime", rt.oci_runtime},
                      {"ociNotes", Strings(rt.oci_notes)},
                      {"limits", rt.limits},
                      {"sandbox", rt.sandbox},
                      {"network", rt.network}};
}

Result<NodeInventory> DecodeInventory(const json::value& body) {
  auto o = AsObject(body, "a node's registration");
  if (!o.ok()) return o.status();
  Fields f(**o);
  NodeInventory inv;
  f.Get("name", &inv.name);
  f.Get("cpuCores", &inv.cpu_cores);
  f.Get("memoryMb", &inv.memory_mb);
  f.Each("gpus", [&](const json::object& g) {
    GpuDevice d;
    Fields(g).Get("index", &d.index);
    Fields(g).Get("type", &d.type);
    Fields(g).Get("uuid", &d.uuid);
    inv.gpus.push_back(std::move(d));
  });
  if (const json::object* rt = f.Object("runtime")) {
    Fields(*rt).Get("ociRuntime", &inv.runtime.oci_runtime);
    Fields(*rt).Get("ociNotes", &inv.runtime.oci_notes);
    Fields(*rt).Get("limits", &inv.runtime.limits);
    Fields(*rt).Get("sandbox", &inv.runtime.sandbox);
    Fields(*rt).Get("network", &inv.runtime.network);
  }
  return inv;
}

// ---- Assignment ------------------------------------------------------------------------------

json::object Encode(const Assignment& a) {
  json::array ws;
  for (const auto& w : a.workers) ws.push_back(EncodeWorker(w));
  json::object versions;
  for (const auto& [id, v] : a.template_versions) versions[id] = v;
  json::array images;
  for (const auto& i : a.images) {
    json::object o{{"generation", i.generation}};
    AddImageAccess(i, &o);
    images.push_back(std::move(o));
  }
  return json::object{{"version", a.version},
                      {"workers", std::move(ws)},
                      {"templateVersions", std::move(versions)},
                      {"images", std::move(images)}};
}

Result<Assignment> DecodeAssignment(const json::value& body) {
  auto o = AsObject(body, "an assignment");
  if (!o.ok()) return o.status();
  Fields f(**o);
  Assignment a;
  f.Get("version", &a.version);
  if (const json::object* tv = f.Object("templateVersions")) {
    a.has_template_versions = true;
    for (const auto& kv : *tv) {
      a.template_versions[std::string(kv.key())] = AsInt(kv.value()).value_or(0);
    }
  }
  a.has_images = f.Has("images");
  f.Each("images", [&](const json::object& i) {
    a.images.push_back(ImagePrefetch{DecodeImageAccess(Fields(i)), ""});
    Fields(i).Get("generation", &a.images.back().generation);
  });
  f.Each("workers", [&](const json::object& w) { a.workers.push_back(DecodeWorker(w)); });
  return a;
}

// ---- Status ----------------------------------------------------------------------------------

void AddAgentParts(const NodeStatus& s, json::object* o) {
  if (s.templates) {
    json::array ts;
    for (const auto& t : *s.templates) ts.push_back(EncodeTemplate(t));
    (*o)["templates"] = std::move(ts);
  }
  if (s.start_counters) (*o)["startCounters"] = EncodeCounters(*s.start_counters);
  if (s.images) {
    json::array is;
    for (const auto& p : *s.images) is.push_back(EncodePull(p));
    (*o)["images"] = std::move(is);
  }
}

json::object Encode(const NodeStatus& s) {
  json::array ws;
  for (const auto& r : s.workers) {
    ws.push_back(json::object{{"workerId", r.worker_id},
                              {"state", WorkerRunStateName(r.state)},
                              {"receivedAt", r.received_ms},
                              {"spawnedAt", r.spawned_ms},
                              {"exitCode", r.exit_code},
                              {"error", r.error},
                              {"startPath", StartPathName(r.start_path)},
                              {"startNote", r.start_note}});
  }
  json::object o{{"workers", std::move(ws)}, {"bundles", Strings(s.bundles)}};
  AddAgentParts(s, &o);
  return o;
}

Result<NodeStatus> DecodeStatus(const json::value& body) {
  auto o = AsObject(body, "a node's status");
  if (!o.ok()) return o.status();
  Fields f(**o);
  NodeStatus s;
  f.Each("workers", [&](const json::object& w) {
    Fields wf(w);
    WorkerReport r;
    std::string state;
    wf.Get("workerId", &r.worker_id);
    wf.Get("state", &state);
    if (r.worker_id.empty() || !ParseName(state, kWorkerRunStates, &r.state)) return;
    wf.Get("receivedAt", &r.received_ms);
    wf.Get("spawnedAt", &r.spawned_ms);
    wf.Get("exitCode", &r.exit_code);
    wf.Get("error", &r.error);
    std::string path;
    wf.Get("startPath", &path);
    ParseName(path, kStartPaths, &r.start_path);  // unknown: kNone
    wf.Get("startNote", &r.start_note);
    s.workers.push_back(std::move(r));
  });
  f.Get("bundles", &s.bundles);
  if (f.Has("templates")) {
    s.templates.emplace();
    f.Each("templates", [&](const json::object& t) {
      if (auto r = DecodeTemplate(t)) s.templates->push_back(std::move(*r));
    });
  }
  if (const json::object* c = f.Object("startCounters")) s.start_counters = DecodeCounters(*c);
  if (f.Has("images")) {
    s.images.emplace();
    f.Each("images", [&](const json::object& p) {
      if (auto r = DecodePull(p)) s.images->push_back(std::move(*r));
    });
  }
  return s;
}

// ---- Logs ------------------------------------------------------------------------------------

json::object Encode(const std::vector<LogLine>& lines) {
  json::array arr;
  for (const auto& l : lines) {
    arr.push_back(json::object{
        {"workerId", l.worker_id}, {"stderr", l.stderr_stream}, {"text", l.text}, {"at", l.at_ms}});
  }
  return json::object{{"lines", std::move(arr)}};
}

Result<std::vector<LogLine>> DecodeLogs(const json::value& body) {
  auto o = AsObject(body, "a batch of log lines");
  if (!o.ok()) return o.status();
  std::vector<LogLine> out;
  Fields(**o).Each("lines", [&](const json::object& x) {
    Fields f(x);
    LogLine l;
    f.Get("workerId", &l.worker_id);
    f.Get("stderr", &l.stderr_stream);
    f.Get("text", &l.text);
    f.Get("at", &l.at_ms);
    out.push_back(std::move(l));
  });
  return out;
}

// ---- Paths -----------------------------------------------------------------------------------

std::string NodePath(const std::string& node_id) {
  return "/v1/nodes/" + http::PercentEncode(node_id);
}

std::string AssignmentPath(const std::string& node_id, int64_t known_version, int64_t wait_ms) {
  return NodePath(node_id) + "/assignment?version=" + std::to_string(known_version) +
         "&wait=" + std::to_string(wait_ms);
}

std::string StatusPath(const std::string& node_id) { return NodePath(node_id) + "/status"; }
std::string LogsPath(const std::string& node_id) { return NodePath(node_id) + "/logs"; }

}  // namespace gantry::protocol
