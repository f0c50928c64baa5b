// The fleet: worker-env (a worker started by hand), ps (workers) and nodes.

#include <memory>
#include <string>
#include <vector>

#include "cli/client.h"
#include "cli/commands.h"
#include "cli/format.h"
#include "http/http.h"

namespace gantry::cli {
namespace {

// `export NAME='VALUE'` lines for a shell to eval.
void PrintWorkerEnv(const Context& ctx, const json::value& b) {
  for (const auto& kv : b.as_object().at("env").as_object()) {
    std::string v(kv.value().as_string());
    std::string quoted;
    for (char ch : v) quoted += ch == '\'' ? std::string("'\\''") : std::string(1, ch);
    ctx.Print("export %s='%s'\n", std::string(kv.key()).c_str(), quoted.c_str());
  }
}

void PrintWorkers(const Context& ctx, const json::value& b) {
  std::vector<std::vector<std::string>> rows;
  for (const auto& w : b.as_object().at("workers").as_array()) {
    std::string phases = "-";
    if (auto* cs = Find(w.as_object(), "coldStart"); cs && cs->is_object()) {
      const auto& c = cs->as_object();
      phases = Ms(c.at("receivedMs")) + "/" + Ms(c.at("spawnedMs")) + "/" + Ms(c.at("readyMs"));
    }
    rows.push_back({Field(w, "id"), Field(w, "endpointId"), Field(w, "state"), Field(w, "nodeId"),
                    Field(w, "gpuType"), Field(w, "jobs"), Field(w, "startPath"), phases});
  }
  PrintTable(
      ctx.out,
      {"ID", "ENDPOINT", "STATE", "NODE", "GPU", "JOBS", "PATH", "RECEIVED/SPAWNED/READY MS"},
      rows);
}

// One row of `gantry nodes`.
std::vector<std::string> NodeRow(const json::value& n) {
  const auto& o = n.as_object();
  std::string templates, snapshots;
  if (auto* ts = Find(o, "templates"); ts && ts->is_array()) {
    for (const auto& t : ts->as_array()) {
      const std::string name = Field(t, "endpointId") + "@" + Field(t, "version");
      if (!Field(t, "state").empty()) {
        templates += (templates.empty() ? "" : " ") + name + ":" + Field(t, "state");
        if (Field(t, "container") == "true") templates += "(container)";
      }
      if (t.as_object().at("snapshot").as_bool()) {
        snapshots += (snapshots.empty() ? "" : " ") + name;
      }
    }
  }
  std::string paths = "-";
  if (auto* c = Find(o, "startCounters"); c && c->is_object()) {
    paths = Field(*c, "forks") + "/" + Field(*c, "restores") + "/" + Field(*c, "forkFailures") +
            "/" + Field(*c, "evictions");
  }
  return {Field(n, "id"),
          Field(n, "alive"),
          Field(n, "cpuCores"),
          Field(n, "memoryMb"),
          std::to_string(o.at("gpus").as_array().size()),
          Field(n, "workers"),
          templates.empty() ? "-" : templates,
          snapshots.empty() ? "-" : snapshots,
          paths};
}

void PrintNodes(const Context& ctx, const json::value& b) {
  std::vector<std::vector<std::string>> rows;
  for (const auto& n : b.as_object().at("nodes").as_array()) rows.push_back(NodeRow(n));
  PrintTable(ctx.out,
             {"NODE", "ALIVE", "CPUS", "MEMORY MB", "GPUS", "WORKERS", "TEMPLATES", "SNAPSHOTS",
              "FORKS/RESTORES/FORK FAILURES/EVICTIONS"},
             rows);
}

}  // namespace

void AddWorkerEnvCommand(CLI::App& app, Context& ctx) {
  auto endpoint = std::make_shared<std::string>();
  auto* worker_env =
      app.add_subcommand("worker-env",
                         "Register one new worker for an endpoint and print its environment "
                         "(eval \"$(gantry worker-env EP)\" then start the handler)");
  worker_env->add_option("endpoint", *endpoint, "Endpoint id")->required();
  worker_env->callback([&ctx, endpoint] {
    Invoke(ctx, "POST", "/v1/endpoints/" + http::PercentEncode(*endpoint) + "/workers", "",
           [&](const json::value& b) { PrintWorkerEnv(ctx, b); });
  });
}

void AddPsCommand(CLI::App& app, Context& ctx) {
  auto endpoint = std::make_shared<std::string>();
  auto* ps = app.add_subcommand("ps", "List workers with their state and cold-start phases");
  ps->add_option("endpoint", *endpoint, "Only this endpoint's workers");
  ps->callback([&ctx, endpoint] {
    std::string query = endpoint->empty() ? "" : "?endpoint=" + http::PercentEncode(*endpoint);
    Invoke(ctx, "GET", "/v1/workers" + query, "",
           [&](const json::value& b) { PrintWorkers(ctx, b); });
  });
}

void AddNodesCommand(CLI::App& app, Context& ctx) {
  auto* nodes = app.add_subcommand(
      "nodes", "List nodes with their inventory, templates, snapshots and start-path counters");
  nodes->callback([&ctx] {
    Invoke(ctx, "GET", "/v1/nodes", "", [&](const json::value& b) { PrintNodes(ctx, b); });
  });
}

}  // namespace gantry::cli
