#include "api/server_main.h"

#include <sys/stat.h>

#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include "api/api.h"
#include "common/files.h"
#include "common/json.h"
#include "store/store.h"

namespace gantry::api {

namespace fs = std::filesystem;

namespace {

// The server's modules, each made from those declared above it and destroyed in reverse. Each
// takes what it calls at construction; what it must hear of from the modules above it (a queued
// job, a deploy, a stopped worker) it observes, subscribing itself (jobs::JobObserver,
// EndpointObserver, WorkerObserver). Loop thread only once the loop runs.
struct Modules {
  Modules(const ServerConfig& config, const Clock* clock, http::EventLoop* loop,
          store::Store* store, const std::string& public_url, scheduling::PriceTable prices,
          std::shared_ptr<const http::AddressPolicy> webhook_policy);
  // Rebuilds every module's state from the store.
  Status Load(store::Store* store);
  Services ForApi(const ServerConfig& config);

  std::shared_ptr<const http::AddressPolicy> webhook_policy;
  const Clock* clock;
  jobs::JobManager jobs;
  scheduling::EndpointRegistry endpoints;
  scheduling::WorkerRegistry workers;
  scheduling::Metering metering;
  scheduling::LogStore logs;
  scheduling::WorkerEnvFactory worker_env;
  scheduling::Scheduler scheduler;
  KeyRing keys;
  BlobStore blobs;
};

jobs::JobsOptions JobsOptionsOf(const ServerConfig& c) {
  jobs::JobsOptions jo;
  jo.run_retention_ms = c.run_retention_ms;
  jo.sync_retention_ms = c.sync_retention_ms;
  jo.stop_grace_ms = c.stop_grace_ms;
  jo.webhook_retry_ms = c.webhook_retry_ms;
  return jo;
}

// Webhooks are POSTed from the loop, each on a fresh connection.
jobs::JobManager::WebhookPoster WebhookPoster(http::EventLoop* loop, int64_t timeout_ms,
                                              std::shared_ptr<const http::AddressPolicy> policy) {
  return [loop, timeout_ms, policy](const std::string& url, std::string body,
                                    std::function<void(bool)> done) {
    http::AsyncFetch(
        loop, "POST", url, std::move(body), {}, timeout_ms,
        [url, done = std::move(done)](Result<http::ClientResponse> r) {
          if (!r.ok() && r.status().code() == Code::kPermissionDenied) {
            GLOG_WARN("webhook %s refused: %s", url.c_str(), r.status().message().c_str());
          }
          done(r.ok() && r->status >= 200 && r->status < 300);
        },
        policy);
  };
}

scheduling::WorkerOptions WorkerOptionsOf(const ServerConfig& c) {
  scheduling::WorkerOptions wo;
  wo.ping_interval_ms = c.ping_interval_ms;
  wo.start_timeout_ms = c.worker_start_timeout_ms;
  return wo;
}

Modules::Modules(const ServerConfig& config, const Clock* clock, http::EventLoop* loop,
                 store::Store* store, const std::string& public_url, scheduling::PriceTable prices,
                 std::shared_ptr<const http::AddressPolicy> policy)
    : webhook_policy(std::move(policy)),
      clock(clock),
      jobs(clock, store, JobsOptionsOf(config),
           WebhookPoster(loop, JobsOptionsOf(config).webhook_timeout_ms, webhook_policy)),
      endpoints(clock, store, &jobs),
      workers(clock, store, &jobs, WorkerOptionsOf(config)),
      metering(clock, store, std::move(prices), &jobs, &workers),
      logs(store),
      worker_env(public_url, config.ping_interval_ms),
      scheduler(clock, &jobs, &endpoints, &workers, scheduling::SchedulerOptions{}, &worker_env,
                &metering),
      keys(clock, store),
      blobs((fs::path(config.data_dir) / "blobs").string()) {}

Status Modules::Load(store::Store* store) {
  auto job_records = store->LoadJobs();
  if (!job_records.ok()) return job_records.status();
  GANTRY_RETURN_IF_ERROR(endpoints.Load());
  GANTRY_RETURN_IF_ERROR(workers.Load());
  GANTRY_RETURN_IF_ERROR(keys.Load());
  GANTRY_RETURN_IF_ERROR(metering.Load());
  GANTRY_RETURN_IF_ERROR(logs.Load());
  GANTRY_RETURN_IF_ERROR(blobs.Init());
  size_t n = job_records->size();
  jobs.Load(std::move(*job_records));
  GLOG_INFO("loaded %zu jobs, %zu endpoints", n, endpoints.List().size());
  return Status::Ok();
}

Services Modules::ForApi(const ServerConfig& config) {
  Services s{clock, &jobs,     &endpoints,  &workers, &scheduler,
             &logs, &metering, &worker_env, &blobs,   &keys};
  s.options.run_body_limit = config.run_body_limit;
  s.options.runsync_body_limit = config.runsync_body_limit;
  s.options.webhook_policy = webhook_policy;
  s.options.rate_limit_scale = config.rate_limit_scale;
  return s;
}

Status BootstrapAdminKey(KeyRing* keys, const std::string& data_dir) {
  if (!keys->empty()) return Status::Ok();
  const Grant admin{Scope::kAdmin, {}, {}};
  const char* env = getenv("GANTRY_ADMIN_KEY");
  if (env && *env) {
    if (strlen(env) < kMinAdminKeyLength) {
      return InvalidArgument("GANTRY_ADMIN_KEY is shorter than " +
                             std::to_string(kMinAdminKeyLength) +
                             " characters: too easy to guess (leave it unset for a random one)");
    }
    keys->Add("admin", env, admin, {});
    fprintf(stderr, "gantry: admin key taken from GANTRY_ADMIN_KEY\n");
    return Status::Ok();
  }
  auto [key, secret] = *keys->Create("admin", admin, {});
  std::string path = (fs::path(data_dir) / "admin.key").string();
  // 0600 from its first byte, never written through a symlink planted in its place.
  if (Status st = ReplaceFile(path, secret + "\n", 0600); !st.ok()) {
    return Internal("cannot write " + path + ": " + st.message());
  }
  printf("Admin API key (shown once; also in %s): %s\n", path.c_str(), secret.c_str());
  fflush(stdout);
  return Status::Ok();
}

// RunPod's prices, or the --prices file's: {"H100": 0.00116, ...} in USD per second.
Result<scheduling::PriceTable> LoadPrices(const std::string& path) {
  scheduling::PriceTable prices = scheduling::DefaultPrices();
  if (path.empty()) return prices;
  std::ifstream f(path);
  std::stringstream ss;
  ss << f.rdbuf();
  auto v = ParseJson(ss.str());
  if (!f || !v.ok() || !v->is_object()) {
    return InvalidArgument("--prices " + path + " is not a JSON object");
  }
  for (const auto& kv : v->as_object()) {
    if (!kv.value().is_number()) {
      return InvalidArgument("--prices: " + std::string(kv.key()) + " is not a number");
    }
    prices[std::string(kv.key())] = kv.value().to_number<double>();
  }
  return prices;
}

// Ticks every module that keeps deadlines, on the loop.
void ScheduleTicks(http::EventLoop* loop, Modules* m) {
  loop->Every(20, [m] { m->jobs.Tick(); });
  loop->Every(500, [m] { m->workers.Tick(); });
  loop->Every(1000, [m] { m->metering.Flush(); });
  loop->Every(200, [m] {
    m->scheduler.Tick();
    m->logs.Expire(m->clock->NowMs());
  });
}

int Fail(const std::string& message, int code = 1) {
  fprintf(stderr, "gantry: %s\n", message.c_str());
  return code;
}

}  // namespace

// The HTTP server's options; `*api` (set once the Api exists) decides requests' body limits.
static http::ServerOptions HttpOptionsOf(const ServerConfig& config, const Api* const* api) {
  http::ServerOptions ho;
  ho.host = config.host;
  ho.port = config.port;
  ho.body_limit = std::max(config.run_body_limit, config.runsync_body_limit) + (64u << 10);
  ho.max_connections = config.max_connections;
  ho.tls_cert_file = config.tls_cert_file;
  ho.tls_key_file = config.tls_key_file;
  ho.body_limit_for = [api](std::string_view method, std::string_view target,
                            std::string_view authorization) {
    return *api ? (*api)->BodyLimitFor(method, target, authorization)
                : Api::kUnauthenticatedBodyLimit;
  };
  return ho;
}

int RunServer(const ServerConfig& config) {
  // The data directory is 0700, and the files with secrets in it (the database, admin.key,
  // blobs) are made 0600.
  auto made = MakePrivateDir(config.data_dir);
  if (!made.ok())
    return Fail("cannot create data dir " + config.data_dir + ": " + made.status().message());
  if (!made->empty()) fprintf(stderr, "gantry: data dir %s\n", made->c_str());
  auto prices = LoadPrices(config.prices_file);
  if (!prices.ok()) return Fail(prices.status().message(), 2);
  std::vector<http::Cidr> allowed;
  for (const auto& text : config.webhook_allow) {
    auto cidr = http::ParseCidr(text);
    if (!cidr.ok()) return Fail("--webhook-allow: " + cidr.status().message(), 2);
    allowed.push_back(*cidr);
  }
  auto webhook_policy = std::make_shared<const http::AddressPolicy>(std::move(allowed));
  SystemClock clock;
  http::EventLoop loop;
  store::SqliteOptions so;
  so.sync_full = config.sync_full;
  auto store =
      store::OpenSqliteStore((fs::path(config.data_dir) / "gantry.db").string(), so,
                             [&loop](std::function<void()> fn) { loop.Post(std::move(fn)); });
  if (!store.ok()) return Fail(store.status().ToString());
  // Listening first makes the URL workers are given known before anything needs it.
  const Api* api_for_limits = nullptr;  // set below, before the first connection is accepted
  http::HttpServer server(&loop, HttpOptionsOf(config, &api_for_limits));
  if (Status st = server.Listen(); !st.ok()) return Fail(st.ToString());
  std::string host = config.host == "0.0.0.0" ? "127.0.0.1" : config.host;
  const std::string url = std::string(config.tls_cert_file.empty() ? "http" : "https") + "://" +
                          host + ":" + std::to_string(server.port());
  Modules m(config, &clock, &loop, store->get(),
            config.public_url.empty() ? url : config.public_url, std::move(*prices),
            webhook_policy);
  Status st = m.Load(store->get());
  if (st.ok()) st = BootstrapAdminKey(&m.keys, config.data_dir);
  if (!st.ok()) return Fail(st.ToString());
  Api api(m.ForApi(config));
  api_for_limits = &api;
  st = server.Serve([&api](http::Request&& r, std::shared_ptr<http::Responder> p) {
    api.Handle(std::move(r), std::move(p));
  });
  if (!st.ok()) return Fail(st.ToString());
  ScheduleTicks(&loop, &m);
  // Shutdown runs off the loop: an in-process agent still talks to the server while it stops
  // its workers, then the loop is told to end.
  std::thread shutdown;
  loop.OnSignals({SIGINT, SIGTERM}, [&](int sig) {
    if (shutdown.joinable()) return;
    GLOG_INFO("signal %d: shutting down", sig);
    shutdown = std::thread([&] {
      if (config.on_shutdown) config.on_shutdown();
      loop.Post([&] {
        server.Stop();
        loop.Stop();
      });
    });
  });
  signal(SIGPIPE, SIG_IGN);
  printf("gantry server listening on %s (data dir %s)\n", url.c_str(), config.data_dir.c_str());
  fflush(stdout);
  if (config.on_listening) {
    // The in-process agent gets a key of its own node only, never the admin key.
    config.on_listening(
        url, m.keys.AddEphemeral("local-agent", Grant{Scope::kNode, {}, config.local_node_id}));
  }
  loop.Run();
  if (shutdown.joinable()) shutdown.join();
  m.metering.Flush();
  (*store)->Stop();  // every queued write is durable before we exit
  return 0;
}

}  // namespace gantry::api
