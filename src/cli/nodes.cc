// The fleet: worker-env (a worker started by hand), ps (workers) and nodes.

#include <algorithm>
#include <cctype>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "cli/client.h"
#include "cli/commands.h"
#include "cli/format.h"
#include "http/http.h"

namespace gantry::cli {
namespace {

// `VALUE` in single quotes, for a shell.
std::string ShellQuote(const std::string& v) {
  std::string quoted = "'";
  for (char ch : v) quoted += ch == '\'' ? std::string("'\\''") : std::string(1, ch);
  return quoted + "'";
}

bool ShellName(const std::string& name) {
  if (name.empty() || std::isdigit(static_cast<unsigned char>(name[0]))) return false;
  return std::all_of(name.begin(), name.end(), [](char ch) {
    return std::isalnum(static_cast<unsigned char>(ch)) || ch == '_';
  });
}

// `export NAME='VALUE'` lines for a shell to eval: the worker's environment from the server,
// then what the agent gives the workers it starts: the SDK (`sdk`, unless "") on PYTHONPATH
// after the endpoint's own entries and before the shell's, and unbuffered output.
void PrintWorkerEnv(const Context& ctx, const json::value& b, const std::string& sdk) {
  std::string python_path;
  bool unbuffered = false;
  for (const auto& kv : b.as_object().at("env").as_object()) {
    const std::string name(kv.key());
    const std::string value(kv.value().as_string());
    if (!ShellName(name)) {
      ctx.PrintError("gantry: skipped %s: not a shell variable name\n", name.c_str());
      continue;
    }
    if (name == "PYTHONPATH") {
      python_path = value;
      continue;
    }
    unbuffered |= name == "PYTHONUNBUFFERED";
    ctx.Print("export %s=%s\n", name.c_str(), ShellQuote(value).c_str());
  }
  if (!sdk.empty()) python_path += (python_path.empty() ? "" : ":") + sdk;
  if (!python_path.empty()) {
    ctx.Print("export PYTHONPATH=%s\"${PYTHONPATH:+:$PYTHONPATH}\"\n",
              ShellQuote(python_path).c_str());
  }
  if (!unbuffered) ctx.Print("export PYTHONUNBUFFERED='1'\n");
  if (sdk.empty()) {
    ctx.PrintError(
        "gantry: the Python SDK (sdk/python) is not next to this binary: put it on "
        "PYTHONPATH, or give --sdk-path\n");
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
  std::string sandbox = "-";
  if (auto* rt = Find(o, "runtime"); rt && rt->is_object() && !Field(*rt, "sandbox").empty()) {
    sandbox = Field(*rt, "sandbox");
  }
  std::string network = "-";
  if (auto* rt = Find(o, "runtime"); rt && rt->is_object() && !Field(*rt, "network").empty()) {
    network = Field(*rt, "network");
  }
  return {Field(n, "id"),
          Field(n, "alive"),
          Field(n, "cpuCores"),
          Field(n, "memoryMb"),
          std::to_string(o.at("gpus").as_array().size()),
          Field(n, "workers"),
          templates.empty() ? "-" : templates,
          snapshots.empty() ? "-" : snapshots,
          paths,
          sandbox,
          network};
}

void PrintNodes(const Context& ctx, const json::value& b) {
  std::vector<std::vector<std::string>> rows;
  for (const auto& n : b.as_object().at("nodes").as_array()) rows.push_back(NodeRow(n));
  PrintTable(ctx.out,
             {"NODE", "ALIVE", "CPUS", "MEMORY MB", "GPUS", "WORKERS", "TEMPLATES", "SNAPSHOTS",
              "FORKS/RESTORES/FORK FAILURES/EVICTIONS", "WORKERS RUN AS", "WORKER NETWORK"},
             rows);
}

}  // namespace

std::string DefaultSdkPath() {
  namespace fs = std::filesystem;
  std::error_code ec;
  fs::path exe = fs::read_symlink("/proc/self/exe", ec);
  if (ec) return "";
  for (fs::path dir = exe.parent_path(); !dir.empty() && dir != dir.root_path();
       dir = dir.parent_path()) {
    if (fs::exists(dir / "sdk" / "python" / "gantry")) return (dir / "sdk" / "python").string();
  }
  return "";
}

void AddWorkerEnvCommand(CLI::App& app, Context& ctx) {
  auto endpoint = std::make_shared<std::string>();
  auto sdk = std::make_shared<std::string>(DefaultSdkPath());
  auto* worker_env = app.add_subcommand(
      "worker-env",
      "Register one new worker for an endpoint and print its environment, the SDK on PYTHONPATH "
      "included: eval \"$(gantry worker-env EP)\", then start the handler in that shell "
      "(e.g. python3 handler.py)");
  worker_env->add_option("endpoint", *endpoint, "Endpoint id")->required();
  worker_env->add_option("--sdk-path", *sdk, "The Python SDK to put on PYTHONPATH")
      ->capture_default_str();
  worker_env->callback([&ctx, endpoint, sdk] {
    Invoke(ctx, "POST", "/v1/endpoints/" + http::PercentEncode(*endpoint) + "/workers", "",
           [&](const json::value& b) { PrintWorkerEnv(ctx, b, *sdk); });
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
