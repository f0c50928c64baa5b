// The commands that run the platform rather than call it: server, agent and up (a server and
// an in-process agent).

#include <pthread.h>
#include <sys/stat.h>
#include <unistd.h>

#include <csignal>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <thread>

#include "agent/agent.h"
#include "agent/process/process_runtime.h"
#include "api/server_main.h"
#include "cli/commands.h"
#include "common/files.h"
#include "http/http.h"

namespace gantry::cli {
namespace {

namespace fs = std::filesystem;

// The flags `server` and `up` share.
struct ServerFlags {
  api::ServerConfig config;
  std::string listen = "127.0.0.1:8000";  // HOST:PORT
  bool no_fsync = false;
};

void AddServerFlags(CLI::App* c, ServerFlags& f) {
  api::ServerConfig& cfg = f.config;
  // The CLI looks for admin.key in $GANTRY_DATA_DIR too (Context::Resolve): one variable says
  // where both are.
  if (const char* d = getenv("GANTRY_DATA_DIR"); d && *d) cfg.data_dir = d;
  c->add_option("--listen", f.listen, "HOST:PORT to listen on (port 0: any free port)")
      ->capture_default_str();
  c->add_option("--data-dir", cfg.data_dir,
                "Where the database and admin key live (default $GANTRY_DATA_DIR, else "
                "./gantry-data)")
      ->capture_default_str();
  c->add_option("--public-url", cfg.public_url,
                "Base URL workers use to reach this server (default: the listen address)");
  c->add_flag("--no-fsync", f.no_fsync,
              "Skip fsync on commit: survives a crash of the process, not of the machine");
  c->add_option("--ping-interval-ms", cfg.ping_interval_ms,
                "Worker heartbeat interval; 3 missed make a worker lost")
      ->capture_default_str();
  c->add_option_function<int64_t>(
      "--worker-start-timeout-s", [&cfg](int64_t s) { cfg.worker_start_timeout_ms = s * 1000; },
      "A registered worker that never connects is lost after this many seconds (default: 600)");
  c->add_option("--stop-grace-ms", cfg.stop_grace_ms,
                "How long a worker may ignore a stop before it is killed")
      ->capture_default_str();
  if (const char* s = getenv("GANTRY_RATE_LIMIT_SCALE"); s && *s) cfg.rate_limit_scale = atof(s);
  c->add_option("--rate-limit-scale", cfg.rate_limit_scale,
                "Multiply every rate limit by this (RunPod's per endpoint, e.g. 1000 /run in 10 s; "
                "10000 requests in 10 s per key); 0: no limits (default $GANTRY_RATE_LIMIT_SCALE, "
                "else 1)")
      ->check(CLI::NonNegativeNumber);
  c->add_option("--tls-cert", cfg.tls_cert_file,
                "Serve HTTPS with this certificate chain (PEM; with --tls-key)")
      ->check(CLI::ExistingFile);
  c->add_option("--tls-key", cfg.tls_key_file, "The private key of --tls-cert (PEM)")
      ->check(CLI::ExistingFile);
  c->add_option("--max-connections", cfg.max_connections,
                "Open connections at most; past it the one idle the longest is closed (default: "
                "the descriptor limit less 64)");
  c->add_option("--webhook-allow", cfg.webhook_allow,
                "A prefix webhooks may reach besides public addresses (e.g. 10.0.0.0/8, "
                "127.0.0.1); repeatable. Loopback, private and link-local addresses are refused "
                "otherwise");
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
}

bool ParseListen(const Context& ctx, const std::string& listen, api::ServerConfig* cfg) {
  size_t colon = listen.rfind(':');
  if (colon == std::string::npos) {
    ctx.PrintError("gantry: --listen expects HOST:PORT, got '%s'\n", listen.c_str());
    return false;
  }
  cfg->host = listen.substr(0, colon);
  if (cfg->host.empty()) cfg->host = "0.0.0.0";
  char* end = nullptr;
  long port = strtol(listen.c_str() + colon + 1, &end, 10);
  if (*end != '\0' || port < 0 || port > 65535) {
    ctx.PrintError("gantry: bad port in --listen '%s'\n", listen.c_str());
    return false;
  }
  cfg->port = static_cast<uint16_t>(port);
  return true;
}

// --listen and --no-fsync into f.config; false (with a message) on a bad --listen.
bool ApplyServerFlags(const Context& ctx, ServerFlags& f) {
  if (!ParseListen(ctx, f.listen, &f.config)) return false;
  f.config.sync_full = !f.no_fsync;
  if (f.config.tls_cert_file.empty() != f.config.tls_key_file.empty()) {
    ctx.PrintError("gantry: --tls-cert and --tls-key go together\n");
    return false;
  }
  const std::string& host = f.config.host;
  const bool loopback =
      host.starts_with("127.") || host == "::1" || host == "[::1]" || host == "localhost";
  if (f.config.tls_cert_file.empty() && !loopback) {
    ctx.PrintError(
        "warning: listening on %s without TLS: API keys, worker secrets and registry passwords "
        "cross the network in clear; give --tls-cert and --tls-key, or put a TLS-terminating "
        "proxy in front (docs/security.md)\n",
        host.c_str());
  }
  return true;
}

// Cold-start flags, the same for `agent` and `up` (DESIGN §4, docs/cold-starts.md).
void AddTemplateFlags(CLI::App* c, agent::AgentOptions& o) {
  // Callbacks rather than negated flags ("!--no-templates"), which --help shows as
  // "--no-templates{false}".
  c->add_flag_callback(
      "--no-templates", [&o] { o.templates = false; },
      "Never keep worker templates: every worker starts in full");
  c->add_flag_callback(
      "--no-snapshots", [&o] { o.snapshots = false; },
      "Keep templates, but no CRIU snapshots of them");
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
  // Whom process workers run as (docs/security.md).
  c->add_flag("--insecure-same-user", o.insecure_same_user,
              "Run workers as the agent's own user even as root (a single-user machine only: "
              "every endpoint's code can then read the data directory and the others' secrets)");
  c->add_flag("--host-network", o.host_network,
              "Let workers share the node's network instead of a namespace of their own each "
              "(they can then reach every service on the host, its loopback included)");
  c->add_flag("--container-userns", o.container_userns,
              "Run image workers in user namespaces: root in a container is host id 400000, "
              "not the host's root (needs a kernel that allows user namespaces)");
  c->add_option("--worker-dir", o.worker_dir,
                "Where workers' bundles and scratch directories live (default: "
                "/var/lib/gantry-workers/<hash> as root, else <data dir>/workers)");
  // Parsed once, in the transform, which leaves FIRST for the option to store.
  c->add_option("--worker-uids", o.worker_uid_first,
                "The uids this node gives endpoints, FIRST-LAST (default: 200000-299999)")
      ->transform(CLI::Validator(
          [&o](std::string& range) -> std::string {
            unsigned long first = 0, last = 0;
            char tail = 0;
            if (sscanf(range.c_str(), "%lu-%lu%c", &first, &last, &tail) != 2 || first < 1000 ||
                last < first || last > 2147483647UL) {
              return "expected FIRST-LAST with 1000 <= FIRST <= LAST, e.g. 200000-299999";
            }
            o.worker_uid_count = static_cast<int>(last - first + 1);
            range = std::to_string(first);  // what the option then stores in worker_uid_first
            return "";
          },
          "FIRST-LAST"));
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

struct AgentFlags {
  agent::AgentOptions options;
  std::string data_dir;
  std::string token_file;
};

// The agent's key: --token, else --token-file's first line, else $GANTRY_TOKEN. False (with
// the error printed) when none is given or the file cannot be read.
bool ResolveAgentToken(const Context& ctx, AgentFlags& f) {
  if (!f.options.token.empty()) {
    ctx.PrintError(
        "warning: --token is visible to every user of this machine (ps); prefer --token-file "
        "or GANTRY_TOKEN\n");
    return true;
  }
  if (!f.token_file.empty()) {
    std::ifstream in(f.token_file);
    std::getline(in, f.options.token);
    while (!f.options.token.empty() && isspace(static_cast<unsigned char>(f.options.token.back())))
      f.options.token.pop_back();
    if (!in && f.options.token.empty()) {
      ctx.PrintError("gantry agent: cannot read the token from %s\n", f.token_file.c_str());
      return false;
    }
  } else if (const char* env = getenv("GANTRY_TOKEN"); env && *env) {
    f.options.token = env;
  }
  if (f.options.token.empty()) {
    ctx.PrintError(
        "gantry agent: no key: give --token-file FILE or set GANTRY_TOKEN (a node key: gantry "
        "keys create --scope node --node NODE)\n");
    return false;
  }
  return true;
}

// Runs the agent until SIGINT or SIGTERM; the exit code.
int RunAgent(const Context& ctx, AgentFlags& f) {
  if (!ResolveAgentToken(ctx, f)) return 2;
  if (!f.data_dir.empty()) {
    auto made = MakePrivateDir(f.data_dir);
    if (!made.ok()) {
      ctx.PrintError("gantry agent: %s\n", made.status().ToString().c_str());
      return 1;
    }
    f.options.workdir = fs::absolute(f.data_dir).string();
  }
  SystemClock clock;
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);  // the threads below inherit the mask
  agent::Agent a(f.options, &clock, agent::NewLocalProcessRuntime(&clock, {}));
  Status st = a.Start();
  if (!st.ok()) {
    ctx.PrintError("gantry agent: %s\n", st.ToString().c_str());
    return 1;
  }
  WaitForStopSignal();
  a.Stop();
  return 0;
}

struct UpFlags {
  ServerFlags server;
  agent::AgentOptions agent;
};

// Runs the server with an in-process agent that starts once the server listens; the exit code.
int RunUp(const Context& ctx, UpFlags& f) {
  if (!ApplyServerFlags(ctx, f.server)) return 2;
  api::ServerConfig& cfg = f.server.config;
  if (f.agent.node_id.empty()) f.agent.node_id = agent::DefaultNodeId();
  cfg.local_node_id = f.agent.node_id;  // the in-process agent's key acts for this node only
  SystemClock clock;
  std::unique_ptr<agent::Agent> local;
  std::thread starter;
  // The in-process agent and its workers trust the server's own certificate unless told whom to
  // trust (clients accept it as an anchor: X509_V_FLAG_PARTIAL_CHAIN).
  if (!cfg.tls_cert_file.empty() && http::CaFile().empty()) {
    setenv("GANTRY_CA_FILE", fs::absolute(cfg.tls_cert_file).c_str(), 1);
  }
  cfg.on_listening = [&](const std::string& url, const std::string& key) {
    f.agent.server_url = url;
    f.agent.token = key;
    f.agent.workdir = fs::absolute(cfg.data_dir).string();
    local =
        std::make_unique<agent::Agent>(f.agent, &clock, agent::NewLocalProcessRuntime(&clock, {}));
    // Registering talks to the server, whose loop starts after this returns.
    starter = std::thread([&] {
      Status st = local->Start();
      if (!st.ok()) ctx.PrintError("gantry up: agent: %s\n", st.ToString().c_str());
    });
  };
  cfg.on_shutdown = [&] {
    if (starter.joinable()) starter.join();
    if (local) local->Stop();
  };
  int rc = api::RunServer(cfg);
  if (starter.joinable()) starter.join();
  return rc;
}

}  // namespace

void AddServerCommand(CLI::App& app, Context& ctx) {
  auto flags = std::make_shared<ServerFlags>();
  auto* server = app.add_subcommand("server", "Run the control plane and gateway");
  AddServerFlags(server, *flags);
  server->callback([&ctx, flags] {
    if (!ApplyServerFlags(ctx, *flags)) {
      ctx.rc = 2;
      return;
    }
    ctx.rc = api::RunServer(flags->config);
  });
}

void AddAgentCommand(CLI::App& app, Context& ctx) {
  auto flags = std::make_shared<AgentFlags>();
  agent::AgentOptions& o = flags->options;
  o.sdk_path = DefaultSdkPath();
  auto* agent_cmd = app.add_subcommand(
      "agent", "Run the node agent: register this machine and run the workers the server assigns");
  agent_cmd->add_option("--server", o.server_url, "Server URL")->required();
  agent_cmd->add_option("--token-file", flags->token_file,
                        "A file holding this node's key (a node key, or an admin key); else "
                        "$GANTRY_TOKEN");
  agent_cmd->add_option("--token", o.token,
                        "The key itself (visible to every local user: prefer --token-file)");
  agent_cmd->add_option("--data-dir", flags->data_dir, "The agent's state (working directory)");
  agent_cmd->add_option("--node-id", o.node_id, "This node's id (default: the host name)");
  agent_cmd->add_option("--fake-gpus", o.fake_gpus,
                        "Simulated GPUs instead of NVML, e.g. \"H100:8,A100-80GB:2\"");
  agent_cmd->add_option("--sdk-path", o.sdk_path, "Python SDK put on workers' PYTHONPATH")
      ->capture_default_str();
  AddTemplateFlags(agent_cmd, o);
  agent_cmd->callback([&ctx, flags] { ctx.rc = RunAgent(ctx, *flags); });
}

void AddUpCommand(CLI::App& app, Context& ctx) {
  auto flags = std::make_shared<UpFlags>();
  flags->agent.sdk_path = DefaultSdkPath();
  auto* up = app.add_subcommand(
      "up", "Run everything on this machine: the server (SQLite) and an in-process agent");
  AddServerFlags(up, flags->server);
  up->add_option("--fake-gpus", flags->agent.fake_gpus, "Simulated GPUs instead of NVML");
  up->add_option("--sdk-path", flags->agent.sdk_path, "Python SDK put on workers' PYTHONPATH")
      ->capture_default_str();
  AddTemplateFlags(up, flags->agent);
  up->callback([&ctx, flags] { ctx.rc = RunUp(ctx, *flags); });
}

}  // namespace gantry::cli
