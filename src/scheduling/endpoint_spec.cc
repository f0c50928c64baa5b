#include "scheduling/endpoint_spec.h"

#include <algorithm>
#include <cmath>
#include <string_view>

#include "common/text.h"

namespace gantry::scheduling {

bool ValidEndpointId(const std::string& id) {
  if (id.empty() || id.size() > 64) return false;
  for (char c : id) {
    if (!isalnum(static_cast<unsigned char>(c)) && c != '-' && c != '_') return false;
  }
  return true;
}

json::object EndpointSpec::ToJson(bool with_secrets) const {
  json::object o;
  o["id"] = id;
  o["name"] = name;
  o["workersMin"] = workers_min;
  o["workersMax"] = workers_max;
  o["idleTimeout"] = idle_timeout_s;
  o["executionTimeoutMs"] = execution_timeout_ms;
  o["scalerType"] = scaler_type;
  o["scalerValue"] = scaler_value;
  json::array gpus;
  for (const auto& g : gpu_type_ids) gpus.emplace_back(g);
  o["gpuTypeIds"] = std::move(gpus);
  o["gpuCount"] = gpu_count;
  o["env"] = StringMapJson(env);
  o["concurrency"] = concurrency;
  o["bufferWorkers"] = buffer_workers;
  o["maxAttempts"] = max_attempts;
  o["maxFailedStarts"] = max_failed_starts;
  o["cpu"] = cpu;
  o["memoryMb"] = memory_mb;
  o["flashboot"] = flashboot;
  json::object w;
  json::array cmd;
  for (const auto& a : worker.command) cmd.emplace_back(a);
  w["command"] = std::move(cmd);
  w["workdir"] = worker.workdir;
  w["env"] = StringMapJson(worker.env);
  o["worker"] = std::move(w);
  o["bundle"] = bundle;
  o["image"] = image;
  if (!registry_username.empty() || !registry_password.empty()) {
    o["registryAuth"] = json::object{
        {"username", registry_username},
        {"password", with_secrets || registry_password.empty() ? registry_password : "********"}};
  }
  o["insecureRegistry"] = insecure_registry;
  o["volume"] = volume;
  o["volumeMountPath"] = volume_mount_path;
  o["readOnlyRootfs"] = read_only_rootfs;
  o["hostNetwork"] = host_network;
  o["createdAt"] = created_ms;
  o["updatedAt"] = updated_ms;
  o["version"] = version;
  return o;
}

jobs::QueueConfig EndpointSpec::ToQueueConfig() const {
  jobs::QueueConfig q;
  q.execution_timeout_ms = execution_timeout_ms;
  q.max_attempts = max_attempts;
  return q;
}

namespace {

Status IntField(const json::object& o, const char* key, int64_t lo, int64_t hi, int64_t* out) {
  const json::value* v = Find(o, key);
  if (!v) return Status::Ok();
  auto n = AsInt(*v);
  if (!n || *n < lo || *n > hi) {
    return InvalidArgument(std::string(key) + " must be an integer from " + std::to_string(lo) +
                           " to " + std::to_string(hi));
  }
  *out = *n;
  return Status::Ok();
}

Status IntField(const json::object& o, const char* key, int64_t lo, int64_t hi, int* out) {
  int64_t v = *out;
  GANTRY_RETURN_IF_ERROR(IntField(o, key, lo, hi, &v));
  *out = static_cast<int>(v);
  return Status::Ok();
}

Status EnvField(const json::object& o, const char* key, std::map<std::string, std::string>* out) {
  const json::value* v = Find(o, key);
  if (!v) return Status::Ok();
  if (!v->is_object()) return InvalidArgument(std::string(key) + " must be an object of strings");
  std::map<std::string, std::string> env;
  for (const auto& kv : v->as_object()) {
    if (!kv.value().is_string()) {
      return InvalidArgument(std::string(key) + "." + std::string(kv.key()) + " must be a string");
    }
    env[std::string(kv.key())] = std::string(kv.value().as_string());
  }
  *out = std::move(env);
  return Status::Ok();
}

Status StringList(const json::value& v, const char* key, std::vector<std::string>* out) {
  if (!v.is_array()) return InvalidArgument(std::string(key) + " must be an array of strings");
  std::vector<std::string> list;
  for (const auto& e : v.as_array()) {
    if (!e.is_string()) return InvalidArgument(std::string(key) + " must be an array of strings");
    list.emplace_back(e.as_string());
  }
  *out = std::move(list);
  return Status::Ok();
}

// name, the scaling fields and each worker's resources.
Status ApplyScalingFields(const json::object& o, EndpointSpec* spec) {
  if (const auto* v = Find(o, "name")) {
    if (!v->is_string()) return InvalidArgument("name must be a string");
    spec->name = std::string(v->as_string());
  }
  GANTRY_RETURN_IF_ERROR(IntField(o, "workersMin", 0, 1000, &spec->workers_min));
  GANTRY_RETURN_IF_ERROR(IntField(o, "workersMax", 0, 1000, &spec->workers_max));
  GANTRY_RETURN_IF_ERROR(IntField(o, "idleTimeout", 0, 86400, &spec->idle_timeout_s));
  GANTRY_RETURN_IF_ERROR(IntField(o, "executionTimeoutMs", jobs::kMinExecutionTimeoutMs,
                                  jobs::kMaxPolicyMs, &spec->execution_timeout_ms));
  if (const auto* v = Find(o, "scalerType")) {
    if (!v->is_string() || (v->as_string() != "QUEUE_DELAY" && v->as_string() != "REQUEST_COUNT")) {
      return InvalidArgument("scalerType must be QUEUE_DELAY or REQUEST_COUNT");
    }
    spec->scaler_type = std::string(v->as_string());
  }
  GANTRY_RETURN_IF_ERROR(IntField(o, "scalerValue", 1, 100000, &spec->scaler_value));
  if (const auto* v = Find(o, "gpuTypeIds")) {
    GANTRY_RETURN_IF_ERROR(StringList(*v, "gpuTypeIds", &spec->gpu_type_ids));
    if (spec->gpu_type_ids.empty()) return InvalidArgument("gpuTypeIds must not be empty");
  }
  GANTRY_RETURN_IF_ERROR(IntField(o, "gpuCount", 1, 16, &spec->gpu_count));
  GANTRY_RETURN_IF_ERROR(EnvField(o, "env", &spec->env));
  GANTRY_RETURN_IF_ERROR(IntField(o, "concurrency", 1, 1000, &spec->concurrency));
  GANTRY_RETURN_IF_ERROR(IntField(o, "bufferWorkers", 0, 100, &spec->buffer_workers));
  GANTRY_RETURN_IF_ERROR(IntField(o, "maxAttempts", 1, 100, &spec->max_attempts));
  GANTRY_RETURN_IF_ERROR(IntField(o, "maxFailedStarts", 0, 1000, &spec->max_failed_starts));
  if (const auto* v = Find(o, "cpu")) {
    double c = v->is_double() ? v->get_double() : static_cast<double>(AsInt(*v).value_or(-1));
    if (!(v->is_number()) || !std::isfinite(c) || c <= 0 || c > 1024) {
      return InvalidArgument("cpu must be a number of cores greater than 0");
    }
    spec->cpu = c;
  }
  return IntField(o, "memoryMb", 16, 16 * 1024 * 1024, &spec->memory_mb);
}

// "worker": {"command", "workdir", "env"}, and "flashboot".
Status ApplyWorkerFields(const json::object& o, EndpointSpec* spec) {
  if (const auto* v = Find(o, "worker")) {
    if (!v->is_object()) return InvalidArgument("worker must be an object");
    const auto& w = v->as_object();
    if (const auto* c = Find(w, "command")) {
      GANTRY_RETURN_IF_ERROR(StringList(*c, "worker.command", &spec->worker.command));
    }
    if (const auto* d = Find(w, "workdir")) {
      if (!d->is_string()) return InvalidArgument("worker.workdir must be a string");
      spec->worker.workdir = std::string(d->as_string());
    }
    GANTRY_RETURN_IF_ERROR(EnvField(w, "env", &spec->worker.env));
  }
  if (const auto* f = Find(o, "flashboot")) {
    if (!f->is_bool()) return InvalidArgument("flashboot must be true or false");
    spec->flashboot = f->get_bool();
  }
  return Status::Ok();
}

// "registryAuth": {"username", "password"}, or null for none.
Status ApplyRegistryAuth(const json::value& v, EndpointSpec* spec) {
  if (v.is_null()) {
    spec->registry_username.clear();
    spec->registry_password.clear();
    return Status::Ok();
  }
  const json::value* u = v.is_object() ? Find(v.as_object(), "username") : nullptr;
  const json::value* pw = v.is_object() ? Find(v.as_object(), "password") : nullptr;
  if (!u || !u->is_string() || !pw || !pw->is_string()) {
    return InvalidArgument("registryAuth must be {\"username\": ..., \"password\": ...}");
  }
  spec->registry_username = std::string(u->as_string());
  // The redacted form the API shows keeps the stored password.
  if (pw->as_string() != "********") spec->registry_password = std::string(pw->as_string());
  return Status::Ok();
}

// What the worker runs from (a bundle or an image and its registry) and its filesystem.
Status ApplyCodeFields(const json::object& o, EndpointSpec* spec) {
  if (const auto* b = Find(o, "bundle")) {
    if (!b->is_string()) return InvalidArgument("bundle must be a digest string");
    spec->bundle = std::string(b->as_string());
  }
  if (const auto* v = Find(o, "image")) {
    if (!v->is_string()) return InvalidArgument("image must be a string like registry/name:tag");
    std::string ref(v->as_string());
    if (ref.find_first_of(" \t\n\"'") != std::string::npos || ref.size() > 512) {
      return InvalidArgument("image is not an image reference: " + ref);
    }
    spec->image = std::move(ref);
  }
  if (const auto* v = Find(o, "registryAuth")) GANTRY_RETURN_IF_ERROR(ApplyRegistryAuth(*v, spec));
  for (auto [name, field] : {std::pair{"insecureRegistry", &spec->insecure_registry},
                             std::pair{"readOnlyRootfs", &spec->read_only_rootfs},
                             std::pair{"hostNetwork", &spec->host_network}}) {
    if (const auto* v = Find(o, name)) {
      if (!v->is_bool()) return InvalidArgument(std::string(name) + " must be true or false");
      *field = v->get_bool();
    }
  }
  if (const auto* v = Find(o, "volume")) {
    if (!v->is_string() ||
        (!v->as_string().empty() && !ValidEndpointId(std::string(v->as_string())))) {
      return InvalidArgument("volume must be a name of letters, digits, '-' and '_'");
    }
    spec->volume = std::string(v->as_string());
  }
  if (const auto* v = Find(o, "volumeMountPath")) {
    if (!v->is_string() || v->as_string().empty() || v->as_string()[0] != '/') {
      return InvalidArgument("volumeMountPath must be an absolute path");
    }
    spec->volume_mount_path = std::string(v->as_string());
  }
  return Status::Ok();
}

// "unknown field: PREFIXname", and "(did you mean PREFIXother?)" when one of `known` is near.
Status UnknownField(std::string_view prefix, std::string_view name,
                    const std::vector<std::string_view>& known) {
  std::string msg = "unknown field: " + std::string(prefix) + std::string(name);
  std::string near = DidYouMean(name, known);
  if (!near.empty()) msg += " (did you mean " + std::string(prefix) + near + "?)";
  return InvalidArgument(msg);
}

bool Known(const std::vector<std::string_view>& known, std::string_view name) {
  return std::find(known.begin(), known.end(), name) != known.end();
}

}  // namespace

const std::vector<std::string_view>& SpecFieldNames() {
  static const std::vector<std::string_view> kNames = {"id",
                                                       "name",
                                                       "workersMin",
                                                       "workersMax",
                                                       "idleTimeout",
                                                       "executionTimeoutMs",
                                                       "scalerType",
                                                       "scalerValue",
                                                       "gpuTypeIds",
                                                       "gpuCount",
                                                       "env",
                                                       "concurrency",
                                                       "maxAttempts",
                                                       "maxFailedStarts",
                                                       "cpu",
                                                       "memoryMb",
                                                       "worker",
                                                       "flashboot",
                                                       "createdAt",
                                                       "updatedAt",
                                                       "version",
                                                       "bufferWorkers",
                                                       "bundle",
                                                       "image",
                                                       "registryAuth",
                                                       "insecureRegistry",
                                                       "volume",
                                                       "volumeMountPath",
                                                       "readOnlyRootfs",
                                                       "hostNetwork"};
  return kNames;
}

const std::vector<std::string_view>& WorkerFieldNames() {
  static const std::vector<std::string_view> kNames = {"command", "workdir", "env"};
  return kNames;
}

Status CheckSpecFieldNames(const json::object& spec) {
  auto check = [](const json::object& o, std::string_view prefix,
                  const std::vector<std::string_view>& known) {
    for (const auto& kv : o) {
      const std::string_view name(kv.key().data(), kv.key().size());
      if (!Known(known, name)) return UnknownField(prefix, name, known);
    }
    return Status::Ok();
  };
  GANTRY_RETURN_IF_ERROR(check(spec, "", SpecFieldNames()));
  const json::value* w = Find(spec, "worker");
  return w && w->is_object() ? check(w->as_object(), "worker.", WorkerFieldNames()) : Status::Ok();
}

Status ApplySpecPatch(const json::value& patch, EndpointSpec* spec) {
  if (!patch.is_object()) return InvalidArgument("the endpoint spec must be a JSON object");
  const auto& o = patch.as_object();
  GANTRY_RETURN_IF_ERROR(CheckSpecFieldNames(o));
  GANTRY_RETURN_IF_ERROR(ApplyScalingFields(o, spec));
  GANTRY_RETURN_IF_ERROR(ApplyWorkerFields(o, spec));
  GANTRY_RETURN_IF_ERROR(ApplyCodeFields(o, spec));
  if (!spec->image.empty() && !spec->bundle.empty()) {
    return InvalidArgument("an endpoint runs an image or a bundle, not both");
  }
  if (spec->workers_min > spec->workers_max) {
    return InvalidArgument("workersMin must not exceed workersMax");
  }
  return Status::Ok();
}

}  // namespace gantry::scheduling
