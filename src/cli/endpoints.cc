// endpoint create|update|get|ls|rm: endpoints through /v1/endpoints.

#include <memory>
#include <string>
#include <vector>

#include "cli/client.h"
#include "cli/commands.h"
#include "cli/format.h"
#include "http/http.h"

namespace gantry::cli {
namespace {

// The spec flags of `endpoint create` and `endpoint update`; -1 and empty: not given.
struct SpecFlags {
  std::string name, file, scaler, workdir, flashboot;
  int workers_min = -1, workers_max = -1, idle_timeout = -1, concurrency = -1, scaler_value = -1,
      gpu_count = -1;
  int64_t execution_timeout_ms = -1;
  std::vector<std::string> gpus, env, command;
};

struct EndpointFlags {
  std::string id;
  SpecFlags spec;
};

void AddSpecFlags(CLI::App* c, SpecFlags& f) {
  c->add_option("--name", f.name, "Display name");
  c->add_option("--file", f.file, "JSON file with the spec (flags override it)");
  c->add_option("--workers-min", f.workers_min, "Always-on workers");
  c->add_option("--workers-max", f.workers_max, "Most workers");
  c->add_option("--idle-timeout", f.idle_timeout, "Seconds a worker stays after its last job");
  c->add_option("--execution-timeout-ms", f.execution_timeout_ms, "Per-job run limit");
  c->add_option("--scaler", f.scaler, "QUEUE_DELAY or REQUEST_COUNT");
  c->add_option("--scaler-value", f.scaler_value, "Seconds (QUEUE_DELAY) or jobs per worker");
  c->add_option("--gpu", f.gpus, "GPU type in order of preference, repeatable (cpu: none)");
  c->add_option("--gpu-count", f.gpu_count, "GPUs per worker");
  c->add_option("--concurrency", f.concurrency, "Jobs per worker");
  c->add_option("--flashboot", f.flashboot,
                "Fork workers from templates and snapshots (default: true)")
      ->check(CLI::IsMember({"true", "false"}));
  c->add_option("--env", f.env, "KEY=VALUE for every worker, repeatable");
  c->add_option("--workdir", f.workdir, "Worker working directory");
  c->add_option("--command", f.command, "Worker command (after --command, one word each)")
      ->expected(-1);
}

// "KEY=VALUE" pairs into an object; false (with a message) on a malformed pair.
bool ParseEnvPairs(const Context& ctx, const std::vector<std::string>& pairs, json::object* out) {
  for (const auto& p : pairs) {
    size_t eq = p.find('=');
    if (eq == std::string::npos || eq == 0) {
      ctx.PrintError("gantry: --env expects KEY=VALUE, got '%s'\n", p.c_str());
      return false;
    }
    (*out)[p.substr(0, eq)] = p.substr(eq + 1);
  }
  return true;
}

json::array JsonStrings(const std::vector<std::string>& v) {
  json::array a;
  for (const auto& x : v) a.emplace_back(x);
  return a;
}

// The spec from --file, then the flags over it; false (with a message) on bad input.
bool BuildSpec(const Context& ctx, const SpecFlags& f, json::object* spec) {
  if (!f.file.empty()) {
    auto v = ParseJson(ReadFile(f.file));
    if (!v.ok() || !v->is_object()) {
      ctx.PrintError("gantry: %s is not a JSON object\n", f.file.c_str());
      return false;
    }
    *spec = v->as_object();
  }
  if (!f.name.empty()) (*spec)["name"] = f.name;
  if (f.workers_min >= 0) (*spec)["workersMin"] = f.workers_min;
  if (f.workers_max >= 0) (*spec)["workersMax"] = f.workers_max;
  if (f.idle_timeout >= 0) (*spec)["idleTimeout"] = f.idle_timeout;
  if (f.execution_timeout_ms >= 0) (*spec)["executionTimeoutMs"] = f.execution_timeout_ms;
  if (!f.scaler.empty()) (*spec)["scalerType"] = f.scaler;
  if (f.scaler_value >= 0) (*spec)["scalerValue"] = f.scaler_value;
  if (!f.flashboot.empty()) (*spec)["flashboot"] = f.flashboot == "true";
  if (!f.gpus.empty()) (*spec)["gpuTypeIds"] = JsonStrings(f.gpus);
  if (f.gpu_count >= 0) (*spec)["gpuCount"] = f.gpu_count;
  if (f.concurrency >= 0) (*spec)["concurrency"] = f.concurrency;
  if (!f.env.empty()) {
    json::object env;
    if (!ParseEnvPairs(ctx, f.env, &env)) return false;
    (*spec)["env"] = std::move(env);
  }
  if (!f.command.empty() || !f.workdir.empty()) {
    json::object w;
    if (auto* old = Find(*spec, "worker"); old && old->is_object()) w = old->as_object();
    if (!f.command.empty()) w["command"] = JsonStrings(f.command);
    if (!f.workdir.empty()) w["workdir"] = f.workdir;
    (*spec)["worker"] = std::move(w);
  }
  return true;
}

// The endpoint's workers and image pulls, as tables.
void PrintEndpointTables(const Context& ctx, const json::value& e) {
  const auto& o = e.as_object();
  if (auto* ws = Find(o, "workers"); ws && ws->is_array()) {
    ctx.Print("workers:\n");
    std::vector<std::vector<std::string>> rows;
    for (const auto& w : ws->as_array()) {
      rows.push_back({Field(w, "id"), Field(w, "state"), Field(w, "jobs"), Field(w, "lastError")});
    }
    if (!rows.empty()) PrintTable(ctx.out, {"ID", "STATE", "JOBS", "LAST ERROR"}, rows);
  }
  if (!Field(e, "image").empty()) ctx.Print("image:         %s\n", Field(e, "image").c_str());
  if (auto* ps = Find(o, "imagePulls"); ps && ps->is_array() && !ps->as_array().empty()) {
    ctx.Print("image pulls:\n");
    std::vector<std::vector<std::string>> rows;
    for (const auto& p : ps->as_array()) {
      rows.push_back({Field(p, "nodeId"), Field(p, "state"), Field(p, "detail")});
    }
    PrintTable(ctx.out, {"NODE", "STATE", "DETAIL"}, rows);
  }
}

void PrintEndpoint(const Context& ctx, const json::value& e) {
  const auto& o = e.as_object();
  ctx.Print("id:            %s\n", Field(e, "id").c_str());
  ctx.Print("name:          %s\n", Field(e, "name").c_str());
  ctx.Print("workers:       min %s, max %s, idle timeout %s s\n", Field(e, "workersMin").c_str(),
            Field(e, "workersMax").c_str(), Field(e, "idleTimeout").c_str());
  ctx.Print("scaler:        %s %s\n", Field(e, "scalerType").c_str(),
            Field(e, "scalerValue").c_str());
  ctx.Print("gpus:          %s x %s\n", Field(e, "gpuTypeIds").c_str(),
            Field(e, "gpuCount").c_str());
  ctx.Print("concurrency:   %s\n", Field(e, "concurrency").c_str());
  ctx.Print("exec timeout:  %s ms, max attempts %s\n", Field(e, "executionTimeoutMs").c_str(),
            Field(e, "maxAttempts").c_str());
  ctx.Print("worker:        %s\n", Field(e, "worker").c_str());
  ctx.Print("version:       %s\n", Field(e, "version").c_str());
  if (auto* j = Find(o, "jobs")) ctx.Print("jobs:          %s\n", ToJson(*j).c_str());
  PrintEndpointTables(ctx, e);
}

void PrintEndpointList(const Context& ctx, const json::value& b) {
  std::vector<std::vector<std::string>> rows;
  for (const auto& e : b.as_object().at("endpoints").as_array()) {
    rows.push_back({Field(e, "id"), Field(e, "name"), Field(e, "gpuTypeIds"),
                    Field(e, "workersMin") + "-" + Field(e, "workersMax"), Field(e, "version")});
  }
  PrintTable(ctx.out, {"ID", "NAME", "GPUS", "WORKERS", "VERSION"}, rows);
}

std::string EndpointPath(const std::string& id) {
  return "/v1/endpoints/" + http::PercentEncode(id);
}

void AddCreateAndUpdate(CLI::App* endpoint, Context& ctx, std::shared_ptr<EndpointFlags> f) {
  auto* create = endpoint->add_subcommand("create", "Create an endpoint");
  create->add_option("id", f->id, "Endpoint id (letters, digits, - and _; generated if absent)");
  AddSpecFlags(create, f->spec);
  create->callback([&ctx, f] {
    json::object spec;
    if (!BuildSpec(ctx, f->spec, &spec)) {
      ctx.rc = kExitUsage;
      return;
    }
    if (!f->id.empty()) spec["id"] = f->id;
    Invoke(ctx, "POST", "/v1/endpoints", ToJson(spec), [&](const json::value& b) {
      ctx.Print("created endpoint %s\n", Field(b, "id").c_str());
    });
  });
  auto* update = endpoint->add_subcommand("update", "Change an endpoint's spec");
  update->add_option("id", f->id, "Endpoint id")->required();
  AddSpecFlags(update, f->spec);
  update->callback([&ctx, f] {
    json::object spec;
    if (!BuildSpec(ctx, f->spec, &spec)) {
      ctx.rc = kExitUsage;
      return;
    }
    Invoke(ctx, "PATCH", EndpointPath(f->id), ToJson(spec), [&](const json::value& b) {
      ctx.Print("updated endpoint %s (version %s)\n", f->id.c_str(), Field(b, "version").c_str());
    });
  });
}

}  // namespace

void AddEndpointCommands(CLI::App& app, Context& ctx) {
  auto f = std::make_shared<EndpointFlags>();
  auto* endpoint = app.add_subcommand("endpoint", "Create, inspect and delete endpoints");
  endpoint->require_subcommand(1);
  AddCreateAndUpdate(endpoint, ctx, f);
  auto* get = endpoint->add_subcommand("get", "Show an endpoint, its workers and job counts");
  get->add_option("id", f->id, "Endpoint id")->required();
  get->callback([&ctx, f] {
    Invoke(ctx, "GET", EndpointPath(f->id), "",
           [&](const json::value& b) { PrintEndpoint(ctx, b); });
  });
  auto* ls = endpoint->add_subcommand("ls", "List endpoints");
  ls->callback([&ctx] {
    Invoke(ctx, "GET", "/v1/endpoints", "",
           [&](const json::value& b) { PrintEndpointList(ctx, b); });
  });
  auto* rm = endpoint->add_subcommand("rm", "Delete an endpoint (its queued jobs go too)");
  rm->add_option("id", f->id, "Endpoint id")->required();
  rm->callback([&ctx, f] {
    Invoke(ctx, "DELETE", EndpointPath(f->id), "",
           [&](const json::value&) { ctx.Print("deleted endpoint %s\n", f->id.c_str()); });
  });
}

}  // namespace gantry::cli
