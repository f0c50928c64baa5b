#include "cli/cli.h"

#include <unistd.h>

#include <CLI/CLI.hpp>
#include <chrono>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <set>
#include <sstream>
#include <thread>

#include "agent/agent.h"
#include "agent/process/process_runtime.h"
#include "api/server_main.h"
#include "cli/toml.h"
#include "common/env.h"
#include "common/json.h"
#include "http/http.h"

namespace gantry::cli {
namespace {

namespace fs = std::filesystem;

struct Conn {
  std::string url;
  std::string key;
  bool json = false;
};

std::string ReadFile(const std::string& path) {
  std::ifstream f(path);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

std::string Trim(std::string s) {
  while (!s.empty() && isspace(static_cast<unsigned char>(s.back()))) s.pop_back();
  size_t i = 0;
  while (i < s.size() && isspace(static_cast<unsigned char>(s[i]))) ++i;
  return s.substr(i);
}

// Flags win, then the environment, then the config file, then the local defaults.
void ResolveConn(Conn* c) {
  std::string cfg_path;
  if (const char* p = getenv("GANTRY_CONFIG"))
    cfg_path = p;
  else if (const char* h = getenv("HOME"))
    cfg_path = std::string(h) + "/.config/gantry/config.json";
  json::object cfg;
  if (!cfg_path.empty() && fs::exists(cfg_path)) {
    auto v = ParseJson(ReadFile(cfg_path));
    if (v.ok() && v->is_object())
      cfg = v->as_object();
    else
      fprintf(stderr, "gantry: ignoring unreadable config file %s\n", cfg_path.c_str());
  }
  auto from_cfg = [&](const char* k) -> std::string {
    const json::value* v = Find(cfg, k);
    return v && v->is_string() ? std::string(v->as_string()) : "";
  };
  if (c->url.empty()) c->url = getenv("GANTRY_URL") ? getenv("GANTRY_URL") : from_cfg("url");
  if (c->url.empty()) c->url = "http://127.0.0.1:8000";
  while (!c->url.empty() && c->url.back() == '/') c->url.pop_back();
  if (c->key.empty())
    c->key = getenv("GANTRY_API_KEY") ? getenv("GANTRY_API_KEY") : from_cfg("apiKey");
  if (c->key.empty()) {
    std::string dir = getenv("GANTRY_DATA_DIR") ? getenv("GANTRY_DATA_DIR") : "gantry-data";
    std::string path = dir + "/admin.key";
    if (fs::exists(path)) c->key = Trim(ReadFile(path));
  }
}

struct Reply {
  int status = 0;
  json::value body;
};

// One API call; prints the error and returns nullopt on failure, except that an answer with
// status `expected_error` (e.g. 404 for "does it exist?") is returned without a word.
std::optional<Reply> Call(const Conn& c, const std::string& method, const std::string& path,
                          const std::string& body = "", int64_t timeout_ms = 30'000,
                          int expected_error = 0) {
  auto url = http::ParseUrl(c.url + path);
  if (!url.ok()) {
    fprintf(stderr, "gantry: bad server URL %s: %s\n", c.url.c_str(),
            url.status().message().c_str());
    return std::nullopt;
  }
  http::HttpClient client(url->host, url->port);
  std::vector<http::Header> headers;
  if (!c.key.empty()) headers.push_back({"Authorization", "Bearer " + c.key});
  auto r = client.Do(method, url->target, body, headers, timeout_ms);
  if (!r.ok()) {
    fprintf(stderr, "gantry: cannot reach the server at %s: %s\n", c.url.c_str(),
            r.status().message().c_str());
    return std::nullopt;
  }
  Reply out{r->status, nullptr};
  if (!r->body.empty()) {
    auto v = ParseJson(r->body);
    out.body = v.ok() ? *v : json::value(r->body);
  }
  if (r->status >= 400 && r->status != expected_error) {
    std::string msg = r->body;
    if (out.body.is_object()) {
      if (auto* e = Find(out.body.as_object(), "error"); e && e->is_object()) {
        if (auto* m = Find(e->as_object(), "message"); m && m->is_string()) msg = m->as_string();
      }
    }
    fprintf(stderr, "gantry: %s (HTTP %d)\n", msg.c_str(), r->status);
    if (r->status == 401) {
      fprintf(stderr,
              "hint: pass --api-key, set GANTRY_API_KEY, or put \"apiKey\" in "
              "~/.config/gantry/config.json\n");
    }
    return std::nullopt;
  }
  return out;
}

std::string Str(const json::value& v) {
  if (v.is_string()) return std::string(v.as_string());
  if (v.is_null()) return "";
  if (v.is_double()) {  // as a person writes it: "2", "0.5", not JSON's "2E0" or "5E-1"
    const double d = v.as_double();
    if (std::floor(d) == d && std::fabs(d) < 1e15) return std::to_string(static_cast<int64_t>(d));
    char buf[32];
    snprintf(buf, sizeof buf, "%.6g", d);
    return buf;
  }
  return ToJson(v);
}

std::string Field(const json::value& obj, const char* key) {
  if (!obj.is_object()) return "";
  const json::value* v = Find(obj.as_object(), key);
  return v ? Str(*v) : "";
}

// Follows the prefetch of endpoint `id`'s image on the nodes (its "imagePulls") for at most
// `timeout_s`, printing each node's new pull events. 0 once every node has it; 1 if a pull
// failed, the endpoint is gone or the time ran out; 0 with a note when no node is to pull it.
int FollowImagePulls(const Conn& conn, const std::string& id, int timeout_s) {
  const auto start = std::chrono::steady_clock::now();
  auto elapsed_s = [&] {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  };
  std::map<std::string, std::string> shown;  // node -> the last line printed for it
  for (;;) {
    auto r = Call(conn, "GET", "/v1/endpoints/" + id);
    if (!r) return 1;
    const json::value* pulls =
        r->body.is_object() ? Find(r->body.as_object(), "imagePulls") : nullptr;
    size_t ready = 0, failed = 0, total = 0;
    if (pulls && pulls->is_array()) {
      for (const auto& p : pulls->as_array()) {
        ++total;
        const std::string node = Field(p, "nodeId"), state = Field(p, "state");
        const std::string detail = Field(p, "detail");
        const std::string line = state + (detail.empty() ? "" : ": " + detail);
        if (shown[node] != line) {
          printf("  %s: %s\n", node.c_str(), line.c_str());
          fflush(stdout);
          shown[node] = line;
        }
        ready += state == "ready";
        failed += state == "failed";
      }
    }
    if (total > 0 && ready + failed == total) {
      if (failed == 0) {
        printf("image ready on %zu node%s\n", total, total == 1 ? "" : "s");
        return 0;
      }
      fprintf(stderr,
              "gantry: the image could not be pulled on %zu of %zu nodes (see above); workers "
              "will try again when they start\n",
              failed, total);
      return 1;
    }
    // A node learns of a new endpoint on its next assignment (within a few seconds).
    if (total == 0 && elapsed_s() > 10) {
      printf("no node can run this endpoint now; its image is pulled when a worker starts\n");
      return 0;
    }
    if (elapsed_s() > timeout_s) {
      fprintf(stderr,
              "gantry: the image is still being pulled after %d s; follow it with: gantry "
              "endpoint get %s\n",
              timeout_s, id.c_str());
      return 1;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
  }
}

void PrintTable(const std::vector<std::string>& header,
                const std::vector<std::vector<std::string>>& rows) {
  std::vector<size_t> w(header.size());
  for (size_t i = 0; i < header.size(); ++i) w[i] = header[i].size();
  for (const auto& r : rows) {
    for (size_t i = 0; i < r.size() && i < w.size(); ++i) w[i] = std::max(w[i], r[i].size());
  }
  auto line = [&](const std::vector<std::string>& r) {
    std::string s;
    for (size_t i = 0; i < r.size(); ++i) {
      s += r[i];
      if (i + 1 < r.size()) s += std::string(w[i] - r[i].size() + 2, ' ');
    }
    printf("%s\n", s.c_str());
  };
  line(header);
  for (const auto& r : rows) line(r);
}

void PrintJson(const json::value& v) { printf("%s\n", ToJson(v).c_str()); }

// "KEY=VALUE" pairs into an object; false on a malformed pair.
bool ParseEnvPairs(const std::vector<std::string>& pairs, json::object* out) {
  for (const auto& p : pairs) {
    size_t eq = p.find('=');
    if (eq == std::string::npos || eq == 0) {
      fprintf(stderr, "gantry: --env expects KEY=VALUE, got '%s'\n", p.c_str());
      return false;
    }
    (*out)[p.substr(0, eq)] = p.substr(eq + 1);
  }
  return true;
}

void PrintEndpoint(const json::value& e) {
  const auto& o = e.as_object();
  printf("id:            %s\n", Field(e, "id").c_str());
  printf("name:          %s\n", Field(e, "name").c_str());
  printf("workers:       min %s, max %s, idle timeout %s s\n", Field(e, "workersMin").c_str(),
         Field(e, "workersMax").c_str(), Field(e, "idleTimeout").c_str());
  printf("scaler:        %s %s\n", Field(e, "scalerType").c_str(), Field(e, "scalerValue").c_str());
  printf("gpus:          %s x %s\n", Field(e, "gpuTypeIds").c_str(), Field(e, "gpuCount").c_str());
  printf("concurrency:   %s\n", Field(e, "concurrency").c_str());
  printf("exec timeout:  %s ms, max attempts %s\n", Field(e, "executionTimeoutMs").c_str(),
         Field(e, "maxAttempts").c_str());
  printf("worker:        %s\n", Field(e, "worker").c_str());
  printf("version:       %s\n", Field(e, "version").c_str());
  if (auto* j = Find(o, "jobs")) printf("jobs:          %s\n", ToJson(*j).c_str());
  if (auto* ws = Find(o, "workers"); ws && ws->is_array()) {
    printf("workers:\n");
    std::vector<std::vector<std::string>> rows;
    for (const auto& w : ws->as_array()) {
      rows.push_back({Field(w, "id"), Field(w, "state"), Field(w, "jobs"), Field(w, "lastError")});
    }
    if (!rows.empty()) PrintTable({"ID", "STATE", "JOBS", "LAST ERROR"}, rows);
  }
  if (!Field(e, "image").empty()) printf("image:         %s\n", Field(e, "image").c_str());
  if (auto* ps = Find(o, "imagePulls"); ps && ps->is_array() && !ps->as_array().empty()) {
    printf("image pulls:\n");
    std::vector<std::vector<std::string>> rows;
    for (const auto& p : ps->as_array()) {
      rows.push_back({Field(p, "nodeId"), Field(p, "state"), Field(p, "detail")});
    }
    PrintTable({"NODE", "STATE", "DETAIL"}, rows);
  }
}

// The Python SDK next to the binary: build/gantry -> sdk/python.
std::string DefaultSdkPath() {
  std::error_code ec;
  fs::path exe = fs::read_symlink("/proc/self/exe", ec);
  if (ec) return "";
  for (fs::path dir = exe.parent_path(); !dir.empty() && dir != dir.root_path();
       dir = dir.parent_path()) {
    if (fs::exists(dir / "sdk" / "python" / "gantry")) return (dir / "sdk" / "python").string();
  }
  return "";
}

// Blocks until SIGINT or SIGTERM.
void WaitForStopSignal() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  int sig = 0;
  sigwait(&set, &sig);
}

std::string Ms(const json::value& v) { return v.is_null() ? "-" : Str(v); }

bool ParseListen(const std::string& listen, api::ServerConfig* cfg) {
  size_t colon = listen.rfind(':');
  if (colon == std::string::npos) {
    fprintf(stderr, "gantry: --listen expects HOST:PORT, got '%s'\n", listen.c_str());
    return false;
  }
  cfg->host = listen.substr(0, colon);
  if (cfg->host.empty()) cfg->host = "0.0.0.0";
  char* end = nullptr;
  long port = strtol(listen.c_str() + colon + 1, &end, 10);
  if (*end != '\0' || port < 0 || port > 65535) {
    fprintf(stderr, "gantry: bad port in --listen '%s'\n", listen.c_str());
    return false;
  }
  cfg->port = static_cast<uint16_t>(port);
  return true;
}

}  // namespace

int Main(int argc, char** argv) {
  CLI::App app{
      "Gantry: a self-hosted serverless GPU platform, wire-compatible with RunPod Serverless.\n"
      "The server URL and API key come from --url/--api-key, GANTRY_URL/GANTRY_API_KEY, or\n"
      "~/.config/gantry/config.json ({\"url\": ..., \"apiKey\": ...}); with none, the CLI uses\n"
      "http://127.0.0.1:8000 and ./gantry-data/admin.key."};
  app.require_subcommand(1);
  Conn conn;
  app.add_option("--url", conn.url, "Server URL (default $GANTRY_URL or http://127.0.0.1:8000)");
  app.add_option("--api-key", conn.key, "API key (default $GANTRY_API_KEY)");
  app.add_flag("--json", conn.json, "Print JSON instead of tables");
  int rc = 0;
  // Resolves the server, makes one call and prints its answer: JSON with --json, else through
  // `human`. A failed call sets the exit code to 1 and returns nullopt.
  auto invoke = [&](const std::string& method, const std::string& path, const std::string& body,
                    const std::function<void(const json::value&)>& human,
                    int64_t timeout_ms = 30'000) -> std::optional<Reply> {
    ResolveConn(&conn);
    auto r = Call(conn, method, path, body, timeout_ms);
    if (!r) {
      rc = 1;
      return std::nullopt;
    }
    if (conn.json)
      PrintJson(r->body);
    else
      human(r->body);
    return r;
  };

  // ---- server
  // The flags `server` and `up` share.
  auto add_server_flags = [](CLI::App* c, api::ServerConfig& cfg, std::string& listen,
                             bool& no_fsync) {
    c->add_option("--listen", listen, "HOST:PORT to listen on (port 0: any free port)")
        ->capture_default_str();
    c->add_option("--data-dir", cfg.data_dir, "Where the database and admin key live")
        ->capture_default_str();
    c->add_option("--public-url", cfg.public_url,
                  "Base URL workers use to reach this server (default: the listen address)");
    c->add_flag("--no-fsync", no_fsync,
                "Skip fsync on commit: survives a crash of the process, not of the machine");
    c->add_option("--ping-interval-ms", cfg.ping_interval_ms,
                  "Worker heartbeat interval; 3 missed make a worker lost")
        ->capture_default_str();
    c->add_option("--stop-grace-ms", cfg.stop_grace_ms,
                  "How long a worker may ignore a stop before it is killed")
        ->capture_default_str();
    c->add_option("--webhook-retry-ms", cfg.webhook_retry_ms,
                  "Delay before each of a failed webhook's two retries")
        ->capture_default_str();
    c->add_option("--prices", cfg.prices_file,
                  "JSON file of GPU type -> USD per second (default: RunPod's serverless prices)");
    c->add_option("--run-retention-ms", cfg.run_retention_ms,
                  "How long finished /run jobs stay readable")
        ->capture_default_str();
    c->add_option("--runsync-retention-ms", cfg.sync_retention_ms,
                  "How long finished /runsync jobs stay readable")
        ->capture_default_str();
  };
  api::ServerConfig scfg;
  std::string listen = "127.0.0.1:8000";
  bool no_fsync = false;
  auto* server = app.add_subcommand("server", "Run the control plane and gateway");
  add_server_flags(server, scfg, listen, no_fsync);
  server->callback([&] {
    if (!ParseListen(listen, &scfg)) {
      rc = 2;
      return;
    }
    scfg.sync_full = !no_fsync;
    rc = api::RunServer(scfg);
  });

  // ---- endpoint
  auto* endpoint = app.add_subcommand("endpoint", "Create, inspect and delete endpoints");
  endpoint->require_subcommand(1);
  std::string ep_id, ep_name, ep_file, ep_scaler, ep_workdir, ep_flashboot;
  int ep_min = -1, ep_max = -1, ep_idle = -1, ep_conc = -1, ep_scaler_value = -1, ep_gpu_count = -1;
  int64_t ep_exec_ms = -1;
  std::vector<std::string> ep_gpus, ep_env, ep_command;
  auto add_spec_flags = [&](CLI::App* c) {
    c->add_option("--name", ep_name, "Display name");
    c->add_option("--file", ep_file, "JSON file with the spec (flags override it)");
    c->add_option("--workers-min", ep_min, "Always-on workers");
    c->add_option("--workers-max", ep_max, "Most workers");
    c->add_option("--idle-timeout", ep_idle, "Seconds a worker stays after its last job");
    c->add_option("--execution-timeout-ms", ep_exec_ms, "Per-job run limit");
    c->add_option("--scaler", ep_scaler, "QUEUE_DELAY or REQUEST_COUNT");
    c->add_option("--scaler-value", ep_scaler_value, "Seconds (QUEUE_DELAY) or jobs per worker");
    c->add_option("--gpu", ep_gpus, "GPU type in order of preference, repeatable (cpu: none)");
    c->add_option("--gpu-count", ep_gpu_count, "GPUs per worker");
    c->add_option("--concurrency", ep_conc, "Jobs per worker");
    c->add_option("--flashboot", ep_flashboot,
                  "Fork workers from templates and snapshots (default: true)")
        ->check(CLI::IsMember({"true", "false"}));
    c->add_option("--env", ep_env, "KEY=VALUE for every worker, repeatable");
    c->add_option("--workdir", ep_workdir, "Worker working directory");
    c->add_option("--command", ep_command, "Worker command (after --command, one word each)")
        ->expected(-1);
  };
  auto build_spec = [&](json::object* spec) -> bool {
    if (!ep_file.empty()) {
      auto v = ParseJson(ReadFile(ep_file));
      if (!v.ok() || !v->is_object()) {
        fprintf(stderr, "gantry: %s is not a JSON object\n", ep_file.c_str());
        return false;
      }
      *spec = v->as_object();
    }
    if (!ep_name.empty()) (*spec)["name"] = ep_name;
    if (ep_min >= 0) (*spec)["workersMin"] = ep_min;
    if (ep_max >= 0) (*spec)["workersMax"] = ep_max;
    if (ep_idle >= 0) (*spec)["idleTimeout"] = ep_idle;
    if (ep_exec_ms >= 0) (*spec)["executionTimeoutMs"] = ep_exec_ms;
    if (!ep_scaler.empty()) (*spec)["scalerType"] = ep_scaler;
    if (ep_scaler_value >= 0) (*spec)["scalerValue"] = ep_scaler_value;
    if (!ep_flashboot.empty()) (*spec)["flashboot"] = ep_flashboot == "true";
    if (!ep_gpus.empty()) {
      json::array g;
      for (auto& x : ep_gpus) g.emplace_back(x);
      (*spec)["gpuTypeIds"] = std::move(g);
    }
    if (ep_gpu_count >= 0) (*spec)["gpuCount"] = ep_gpu_count;
    if (ep_conc >= 0) (*spec)["concurrency"] = ep_conc;
    if (!ep_env.empty()) {
      json::object env;
      if (!ParseEnvPairs(ep_env, &env)) return false;
      (*spec)["env"] = std::move(env);
    }
    if (!ep_command.empty() || !ep_workdir.empty()) {
      json::object w;
      if (auto* old = Find(*spec, "worker"); old && old->is_object()) w = old->as_object();
      if (!ep_command.empty()) {
        json::array a;
        for (auto& x : ep_command) a.emplace_back(x);
        w["command"] = std::move(a);
      }
      if (!ep_workdir.empty()) w["workdir"] = ep_workdir;
      (*spec)["worker"] = std::move(w);
    }
    return true;
  };
  auto* ep_create = endpoint->add_subcommand("create", "Create an endpoint");
  ep_create->add_option("id", ep_id, "Endpoint id (letters, digits, - and _; generated if absent)");
  add_spec_flags(ep_create);
  ep_create->callback([&] {
    json::object spec;
    if (!build_spec(&spec)) {
      rc = 2;
      return;
    }
    if (!ep_id.empty()) spec["id"] = ep_id;
    invoke("POST", "/v1/endpoints", ToJson(spec),
           [&](const json::value& b) { printf("created endpoint %s\n", Field(b, "id").c_str()); });
  });
  auto* ep_update = endpoint->add_subcommand("update", "Change an endpoint's spec");
  ep_update->add_option("id", ep_id, "Endpoint id")->required();
  add_spec_flags(ep_update);
  ep_update->callback([&] {
    json::object spec;
    if (!build_spec(&spec)) {
      rc = 2;
      return;
    }
    invoke("PATCH", "/v1/endpoints/" + http::PercentEncode(ep_id), ToJson(spec),
           [&](const json::value& b) {
             printf("updated endpoint %s (version %s)\n", ep_id.c_str(),
                    Field(b, "version").c_str());
           });
  });
  auto* ep_get = endpoint->add_subcommand("get", "Show an endpoint, its workers and job counts");
  ep_get->add_option("id", ep_id, "Endpoint id")->required();
  ep_get->callback([&] {
    invoke("GET", "/v1/endpoints/" + http::PercentEncode(ep_id), "",
           [&](const json::value& b) { PrintEndpoint(b); });
  });
  auto* ep_ls = endpoint->add_subcommand("ls", "List endpoints");
  ep_ls->callback([&] {
    invoke("GET", "/v1/endpoints", "", [&](const json::value& b) {
      std::vector<std::vector<std::string>> rows;
      for (const auto& e : b.as_object().at("endpoints").as_array()) {
        rows.push_back({Field(e, "id"), Field(e, "name"), Field(e, "gpuTypeIds"),
                        Field(e, "workersMin") + "-" + Field(e, "workersMax"),
                        Field(e, "version")});
      }
      PrintTable({"ID", "NAME", "GPUS", "WORKERS", "VERSION"}, rows);
    });
  });
  auto* ep_rm = endpoint->add_subcommand("rm", "Delete an endpoint (its queued jobs go too)");
  ep_rm->add_option("id", ep_id, "Endpoint id")->required();
  ep_rm->callback([&] {
    invoke("DELETE", "/v1/endpoints/" + http::PercentEncode(ep_id), "",
           [&](const json::value& b) { printf("deleted endpoint %s\n", ep_id.c_str()); });
  });

  // ---- run / status
  std::string run_ep, run_input, job_id;
  bool run_async = false;
  int64_t run_wait = 90'000;
  auto* run = app.add_subcommand("run", "Submit a job and (by default) wait for its result");
  run->add_option("endpoint", run_ep, "Endpoint id")->required();
  run->add_option("--input", run_input, "The job's input as JSON, e.g. '{\"prompt\": \"hi\"}'")
      ->required();
  run->add_flag("--async", run_async, "Return the job id at once (/run) instead of waiting");
  run->add_option("--wait", run_wait, "Most milliseconds /runsync waits (1000-300000)")
      ->capture_default_str();
  run->callback([&] {
    auto input = ParseJson(run_input);
    if (!input.ok()) {
      fprintf(stderr, "gantry: --input is not valid JSON: %s\n", input.status().message().c_str());
      rc = 2;
      return;
    }
    std::string body = ToJson(json::object{{"input", *input}});
    std::string path = "/v2/" + http::PercentEncode(run_ep) +
                       (run_async ? "/run" : "/runsync?wait=" + std::to_string(run_wait));
    auto r = invoke(
        "POST", path, body,
        [&](const json::value& b) {
          std::string status = Field(b, "status");
          if (run_async) {
            printf("%s %s\n", Field(b, "id").c_str(), status.c_str());
          } else if (status == "COMPLETED") {
            printf("%s\n", Field(b, "output").c_str());
          } else {
            printf("job %s is %s", Field(b, "id").c_str(), status.c_str());
            if (!Field(b, "error").empty()) printf(": %s", Field(b, "error").c_str());
            printf("\n");
          }
        },
        run_wait + 30'000);
    if (!r) return;
    std::string status = Field(r->body, "status");
    if (!run_async && (status == "FAILED" || status == "TIMED_OUT" || status == "CANCELLED")) {
      rc = 1;
    }
  });
  auto* status = app.add_subcommand("status", "Show a job's status");
  status->add_option("endpoint", run_ep, "Endpoint id")->required();
  status->add_option("job", job_id, "Job id")->required();
  status->callback([&] {
    invoke("GET", "/v2/" + http::PercentEncode(run_ep) + "/status/" + http::PercentEncode(job_id),
           "", [&](const json::value& b) {
             PrintTable({"ID", "STATUS", "DELAY MS", "EXEC MS", "WORKER"},
                        {{Field(b, "id"), Field(b, "status"), Field(b, "delayTime"),
                          Field(b, "executionTime"), Field(b, "workerId")}});
             if (!Field(b, "output").empty()) printf("output: %s\n", Field(b, "output").c_str());
             if (!Field(b, "error").empty()) printf("error: %s\n", Field(b, "error").c_str());
           });
  });

  // ---- keys
  auto* keys = app.add_subcommand("keys", "Manage API keys");
  keys->require_subcommand(1);
  std::string key_name = "key", key_id;
  auto* k_create = keys->add_subcommand("create", "Create an API key (shown once)");
  k_create->add_option("--name", key_name, "A name for the key")->capture_default_str();
  k_create->callback([&] {
    invoke("POST", "/v1/keys", ToJson(json::object{{"name", key_name}}), [&](const json::value& b) {
      printf("created key %s (%s); it is shown only now:\n%s\n", Field(b, "id").c_str(),
             Field(b, "name").c_str(), Field(b, "key").c_str());
    });
  });
  auto* k_ls = keys->add_subcommand("ls", "List API keys");
  k_ls->callback([&] {
    invoke("GET", "/v1/keys", "", [&](const json::value& b) {
      std::vector<std::vector<std::string>> rows;
      for (const auto& k : b.as_object().at("keys").as_array()) {
        rows.push_back(
            {Field(k, "id"), Field(k, "name"), Field(k, "prefix") + "...", Field(k, "createdAt")});
      }
      PrintTable({"ID", "NAME", "PREFIX", "CREATED (ms)"}, rows);
    });
  });
  auto* k_revoke = keys->add_subcommand("revoke", "Revoke an API key");
  k_revoke->add_option("id", key_id, "Key id")->required();
  k_revoke->callback([&] {
    invoke("DELETE", "/v1/keys/" + http::PercentEncode(key_id), "",
           [&](const json::value& b) { printf("revoked key %s\n", key_id.c_str()); });
  });

  // ---- worker-env
  std::string we_ep;
  auto* worker_env =
      app.add_subcommand("worker-env",
                         "Register one new worker for an endpoint and print its environment "
                         "(eval \"$(gantry worker-env EP)\" then start the handler)");
  worker_env->add_option("endpoint", we_ep, "Endpoint id")->required();
  worker_env->callback([&] {
    invoke("POST", "/v1/endpoints/" + http::PercentEncode(we_ep) + "/workers", "",
           [&](const json::value& b) {
             for (const auto& kv : b.as_object().at("env").as_object()) {
               std::string v(kv.value().as_string());
               std::string quoted;
               for (char ch : v) quoted += ch == '\'' ? std::string("'\\''") : std::string(1, ch);
               printf("export %s='%s'\n", std::string(kv.key()).c_str(), quoted.c_str());
             }
           });
  });

  // Cold-start flags, the same for `agent` and `up` (DESIGN §4, docs/cold-starts.md).
  auto add_template_flags = [](CLI::App* c, agent::AgentOptions& o) {
    c->add_flag("!--no-templates", o.templates,
                "Never keep worker templates: every worker starts in full");
    c->add_flag("!--no-snapshots", o.snapshots, "Keep templates, but no CRIU snapshots of them");
    c->add_option_function<std::string>(
         "--restore-mode",
         [&o](const std::string& m) {
           o.restore_mode = m == "full" ? agent::RestoreMode::kFull : agent::RestoreMode::kLazy;
         },
         "How snapshots are restored: lazy (pages on demand, userfaultfd) or full (default: lazy)")
        ->check(CLI::IsMember({"lazy", "full"}));
    c->add_option("--template-memory-mb", o.template_memory_mb,
                  "Templates' memory budget, PSS in MB (default: a quarter of the memory)");
    c->add_option("--snapshot-disk-mb", o.snapshot_disk_mb, "Snapshots' disk budget in MB")
        ->capture_default_str();
    c->add_option_function<int64_t>(
        "--image-keep-unused-s", [&o](int64_t s) { o.image_keep_unused_ms = s * 1000; },
        "Remove a container image no endpoint of this node uses, and no worker runs, after this "
        "many seconds (default: 600)");
  };

  // ---- agent
  agent::AgentOptions aopt;
  aopt.sdk_path = DefaultSdkPath();
  std::string agent_data_dir;
  auto* agent_cmd = app.add_subcommand(
      "agent", "Run the node agent: register this machine and run the workers the server assigns");
  agent_cmd->add_option("--server", aopt.server_url, "Server URL")->required();
  agent_cmd->add_option("--token", aopt.token, "An API key of the server")->required();
  agent_cmd->add_option("--data-dir", agent_data_dir, "The agent's state (working directory)");
  agent_cmd->add_option("--node-id", aopt.node_id, "This node's id (default: the host name)");
  agent_cmd->add_option("--fake-gpus", aopt.fake_gpus,
                        "Simulated GPUs instead of NVML, e.g. \"H100:8,A100-80GB:2\"");
  agent_cmd->add_option("--sdk-path", aopt.sdk_path, "Python SDK put on workers' PYTHONPATH")
      ->capture_default_str();
  add_template_flags(agent_cmd, aopt);
  agent_cmd->callback([&] {
    if (!agent_data_dir.empty()) {
      fs::create_directories(agent_data_dir);
      aopt.workdir = fs::absolute(agent_data_dir).string();
    }
    SystemClock clock;
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &set, nullptr);  // the threads below inherit the mask
    agent::Agent a(aopt, &clock, agent::NewLocalProcessRuntime(&clock, {}));
    Status st = a.Start();
    if (!st.ok()) {
      fprintf(stderr, "gantry agent: %s\n", st.ToString().c_str());
      rc = 1;
      return;
    }
    WaitForStopSignal();
    a.Stop();
  });

  // ---- up
  api::ServerConfig ucfg;
  std::string up_listen = "127.0.0.1:8000";
  agent::AgentOptions uopt;
  uopt.sdk_path = DefaultSdkPath();
  auto* up = app.add_subcommand(
      "up", "Run everything on this machine: the server (SQLite) and an in-process agent");
  bool up_no_fsync = false;
  add_server_flags(up, ucfg, up_listen, up_no_fsync);
  up->add_option("--fake-gpus", uopt.fake_gpus, "Simulated GPUs instead of NVML");
  up->add_option("--sdk-path", uopt.sdk_path, "Python SDK put on workers' PYTHONPATH")
      ->capture_default_str();
  add_template_flags(up, uopt);
  up->callback([&] {
    if (!ParseListen(up_listen, &ucfg)) {
      rc = 2;
      return;
    }
    ucfg.sync_full = !up_no_fsync;
    SystemClock clock;
    std::unique_ptr<agent::Agent> local;
    std::thread starter;
    ucfg.on_listening = [&](const std::string& url, const std::string& key) {
      uopt.server_url = url;
      uopt.token = key;
      uopt.workdir = fs::absolute(ucfg.data_dir).string();
      local =
          std::make_unique<agent::Agent>(uopt, &clock, agent::NewLocalProcessRuntime(&clock, {}));
      // Registering talks to the server, whose loop starts after this returns.
      starter = std::thread([&] {
        Status st = local->Start();
        if (!st.ok()) fprintf(stderr, "gantry up: agent: %s\n", st.ToString().c_str());
      });
    };
    ucfg.on_shutdown = [&] {
      if (starter.joinable()) starter.join();
      if (local) local->Stop();
    };
    rc = api::RunServer(ucfg);
    if (starter.joinable()) starter.join();
  });

  // ---- ps
  std::string ps_ep;
  auto* ps = app.add_subcommand("ps", "List workers with their state and cold-start phases");
  ps->add_option("endpoint", ps_ep, "Only this endpoint's workers");
  ps->callback([&] {
    invoke("GET", "/v1/workers" + (ps_ep.empty() ? "" : "?endpoint=" + http::PercentEncode(ps_ep)),
           "", [&](const json::value& b) {
             std::vector<std::vector<std::string>> rows;
             for (const auto& w : b.as_object().at("workers").as_array()) {
               std::string phases = "-";
               if (auto* cs = Find(w.as_object(), "coldStart"); cs && cs->is_object()) {
                 const auto& c = cs->as_object();
                 phases = Ms(c.at("receivedMs")) + "/" + Ms(c.at("spawnedMs")) + "/" +
                          Ms(c.at("readyMs"));
               }
               rows.push_back({Field(w, "id"), Field(w, "endpointId"), Field(w, "state"),
                               Field(w, "nodeId"), Field(w, "gpuType"), Field(w, "jobs"),
                               Field(w, "startPath"), phases});
             }
             PrintTable({"ID", "ENDPOINT", "STATE", "NODE", "GPU", "JOBS", "PATH",
                         "RECEIVED/SPAWNED/READY MS"},
                        rows);
           });
  });

  // ---- nodes
  auto* nodes = app.add_subcommand(
      "nodes", "List nodes with their inventory, templates, snapshots and start-path counters");
  nodes->callback([&] {
    invoke("GET", "/v1/nodes", "", [&](const json::value& b) {
      std::vector<std::vector<std::string>> rows;
      for (const auto& n : b.as_object().at("nodes").as_array()) {
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
          paths = Field(*c, "forks") + "/" + Field(*c, "restores") + "/" +
                  Field(*c, "forkFailures") + "/" + Field(*c, "evictions");
        }
        rows.push_back({Field(n, "id"), Field(n, "alive"), Field(n, "cpuCores"),
                        Field(n, "memoryMb"), std::to_string(o.at("gpus").as_array().size()),
                        Field(n, "workers"), templates.empty() ? "-" : templates,
                        snapshots.empty() ? "-" : snapshots, paths});
      }
      PrintTable({"NODE", "ALIVE", "CPUS", "MEMORY MB", "GPUS", "WORKERS", "TEMPLATES", "SNAPSHOTS",
                  "FORKS/RESTORES/FORK FAILURES/EVICTIONS"},
                 rows);
    });
  });

  // ---- deploy
  std::string deploy_dir, deploy_id, deploy_image;
  bool deploy_no_wait = false;
  int deploy_wait_s = 600;
  auto* deploy = app.add_subcommand(
      "deploy",
      "Upload DIR as a code bundle and create or update the endpoint in DIR/gantry.toml; or, "
      "with --image (or image = \"...\" in gantry.toml), deploy a container image instead");
  deploy->add_option("dir", deploy_dir, "Directory with gantry.toml and the handler");
  deploy->add_option("--id", deploy_id,
                     "Endpoint id (default: id in gantry.toml, else DIR's name)");
  deploy->add_option("--image", deploy_image,
                     "An OCI image (registry/name:tag) to run instead of a code bundle");
  deploy->add_flag("--no-wait", deploy_no_wait,
                   "With an image: return at once instead of following its pull on the nodes");
  deploy->add_option("--wait-timeout", deploy_wait_s,
                     "With an image: seconds to follow its pull at most (default 600)");
  deploy->callback([&] {
    ResolveConn(&conn);
    if (deploy_dir.empty() && deploy_image.empty()) {
      fprintf(stderr, "gantry: deploy needs a directory or --image (see gantry deploy --help)\n");
      rc = 2;
      return;
    }
    fs::path dir;
    Result<json::object> spec = json::object{};
    if (!deploy_dir.empty()) {
      dir = fs::absolute(deploy_dir).lexically_normal();
      if (dir.filename().empty()) dir = dir.parent_path();
      std::string toml_path = (dir / "gantry.toml").string();
      if (fs::exists(toml_path)) {
        spec = ParseToml(ReadFile(toml_path));
      } else if (deploy_image.empty()) {
        fprintf(stderr, "gantry: %s not found\n", toml_path.c_str());
        rc = 2;
        return;
      }
      if (!spec.ok()) {
        fprintf(stderr, "gantry: %s\n", spec.status().message().c_str());
        rc = 2;
        return;
      }
    }
    std::string id = deploy_id;
    if (id.empty()) {
      const json::value* v = Find(*spec, "id");
      id = v && v->is_string() ? std::string(v->as_string()) : dir.filename().string();
    }
    if (id.empty()) {
      fprintf(stderr, "gantry: give the endpoint an --id\n");
      rc = 2;
      return;
    }
    (*spec)["id"] = id;
    if (!deploy_image.empty()) (*spec)["image"] = deploy_image;
    const json::value* image = Find(*spec, "image");
    const bool image_mode = image && image->is_string() && !image->as_string().empty();
    std::string digest;
    size_t file_count = 0, uploaded = 0, uploaded_bytes = 0;
    if (image_mode) {
      (*spec)["bundle"] = "";
    } else {
      // The bundle: every regular file below DIR, named by content.
      struct File {
        std::string path, digest, data;
        int mode;
      };
      std::vector<File> files;
      for (auto it = fs::recursive_directory_iterator(dir);
           it != fs::recursive_directory_iterator(); ++it) {
        std::string name = it->path().filename().string();
        if (it->is_directory() && (name == ".git" || name == "__pycache__" || name == ".venv" ||
                                   name == "node_modules")) {
          it.disable_recursion_pending();
          continue;
        }
        if (!it->is_regular_file() || it->is_symlink()) continue;
        File f;
        f.path = fs::relative(it->path(), dir).string();
        f.data = ReadFile(it->path().string());
        f.digest = Sha256Hex(f.data);
        f.mode = static_cast<int>(fs::status(it->path()).permissions() & fs::perms::all);
        files.push_back(std::move(f));
      }
      json::array digests;
      for (const auto& f : files) digests.emplace_back(f.digest);
      auto missing = Call(conn, "POST", "/v1/blobs/missing",
                          ToJson(json::object{{"digests", std::move(digests)}}));
      if (!missing) {
        rc = 1;
        return;
      }
      std::set<std::string> need;
      for (const auto& d : missing->body.as_object().at("missing").as_array()) {
        need.insert(std::string(d.as_string()));
      }
      size_t n = 0;
      file_count = files.size();
      for (const auto& f : files) {
        if (!need.count(f.digest)) continue;
        need.erase(f.digest);  // the same content twice uploads once
        ++n;
        fprintf(stderr, "uploading %s (%zu bytes) [%zu]\n", f.path.c_str(), f.data.size(), n);
        if (!Call(conn, "PUT", "/v1/blobs/" + f.digest, f.data, 300'000)) {
          rc = 1;
          return;
        }
        ++uploaded;
        uploaded_bytes += f.data.size();
      }
      json::array manifest;
      for (const auto& f : files) {
        manifest.push_back(json::object{{"path", f.path}, {"digest", f.digest}, {"mode", f.mode}});
      }
      auto bundle =
          Call(conn, "POST", "/v1/bundles", ToJson(json::object{{"files", std::move(manifest)}}));
      if (!bundle) {
        rc = 1;
        return;
      }
      digest = Field(bundle->body, "digest");
      (*spec)["bundle"] = digest;
    }
    // Create, or update if it exists (an update with nothing changed keeps the version).
    std::string path = "/v1/endpoints/" + http::PercentEncode(id);
    auto exists = Call(conn, "GET", path, "", 30'000, /*expected_error=*/404);
    if (!exists) {
      rc = 1;
      return;
    }
    bool update = exists->status == 200;
    auto r = update ? Call(conn, "PATCH", path, ToJson(*spec))
                    : Call(conn, "POST", "/v1/endpoints", ToJson(*spec));
    if (!r) {
      rc = 1;
      return;
    }
    if (conn.json) return PrintJson(r->body);
    if (image_mode) {
      printf("deployed %s: version %s, image %s\n", id.c_str(), Field(r->body, "version").c_str(),
             Field(r->body, "image").c_str());
      if (!deploy_no_wait) rc = FollowImagePulls(conn, id, deploy_wait_s);
    } else {
      printf("deployed %s: version %s, bundle %.12s (%zu files, %zu uploaded, %zu bytes)\n",
             id.c_str(), Field(r->body, "version").c_str(), digest.c_str(), file_count, uploaded,
             uploaded_bytes);
    }
  });

  // ---- usage
  std::string usage_since, usage_ep;
  auto* usage = app.add_subcommand("usage", "Show billed worker time and cost, and job time");
  usage->add_option("--since", usage_since,
                    "Only usage after this: a duration back from now (90s, 30m, 24h, 7d)");
  usage->add_option("--endpoint", usage_ep, "Only this endpoint");
  usage->callback([&] {
    int64_t since = 0;
    if (!usage_since.empty()) {
      char* end = nullptr;
      double n = strtod(usage_since.c_str(), &end);
      std::string unit(end);
      int64_t mult = unit == "s"   ? 1000
                     : unit == "m" ? 60'000
                     : unit == "h" ? 3'600'000
                     : unit == "d" ? 86'400'000
                                   : 0;
      if (end == usage_since.c_str() || mult == 0 || n < 0) {
        fprintf(stderr, "gantry: --since expects a duration like 30m, 24h or 7d\n");
        rc = 2;
        return;
      }
      since = SystemClock().NowMs() - static_cast<int64_t>(n * static_cast<double>(mult));
    }
    std::string path = "/v1/usage?since=" + std::to_string(since);
    if (!usage_ep.empty()) path += "&endpoint=" + http::PercentEncode(usage_ep);
    invoke("GET", path, "", [&](const json::value& b) {
      std::vector<std::vector<std::string>> rows;
      for (const auto& l : b.as_object().at("byEndpoint").as_array()) {
        char cost[32];
        snprintf(cost, sizeof cost, "$%.4f", l.as_object().at("cost").to_number<double>());
        rows.push_back({Field(l, "endpointId"), Field(l, "gpuType") + " x" + Field(l, "gpuCount"),
                        Field(l, "workers"), Field(l, "billedSeconds"), cost});
      }
      PrintTable({"ENDPOINT", "GPU", "WORKERS", "BILLED S", "COST"}, rows);
      std::vector<std::vector<std::string>> jrows;
      for (const auto& j : b.as_object().at("jobs").as_array()) {
        jrows.push_back({Field(j, "endpointId"), Field(j, "jobs"), Field(j, "executionMs")});
      }
      if (!jrows.empty()) {
        printf("\n");
        PrintTable({"ENDPOINT", "JOBS (ALL TIME)", "EXECUTION MS"}, jrows);
      }
      printf("\ntotal: %s billed seconds, $%.4f\n", Field(b, "totalBilledSeconds").c_str(),
             b.as_object().at("totalCost").to_number<double>());
    });
  });

  // ---- logs
  std::string logs_ep, logs_worker;
  bool follow = false;
  auto* logs = app.add_subcommand("logs", "Show an endpoint's worker logs");
  logs->add_option("endpoint", logs_ep, "Endpoint id")->required();
  logs->add_option("--worker", logs_worker, "Only this worker's lines");
  std::string logs_job;
  logs->add_option("--job", logs_job, "Only the lines the job's worker logged while it ran");
  logs->add_flag("-f,--follow", follow, "Keep printing new lines");
  logs->callback([&] {
    ResolveConn(&conn);
    int64_t after = 0;
    do {
      std::string path = "/v1/logs?endpoint=" + http::PercentEncode(logs_ep) +
                         "&after=" + std::to_string(after) + (follow ? "&wait=30000" : "");
      if (!logs_worker.empty()) path += "&worker=" + http::PercentEncode(logs_worker);
      if (!logs_job.empty()) path += "&job=" + http::PercentEncode(logs_job);
      auto r = Call(conn, "GET", path, "", 60'000);
      if (!r) {
        rc = 1;
        return;
      }
      for (const auto& l : r->body.as_object().at("lines").as_array()) {
        after = std::max<int64_t>(after, AsInt(l.as_object().at("seq")).value_or(after));
        if (conn.json)
          PrintJson(l);
        else
          printf("%s %s\n", Field(l, "workerId").c_str(), Field(l, "text").c_str());
      }
      fflush(stdout);
    } while (follow);
  });

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : 2;
  }
  return rc;
}

}  // namespace gantry::cli
