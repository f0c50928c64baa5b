#include "api/server_main.h"

#include <sys/stat.h>

#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include "api/api_server.h"
#include "common/json.h"
#include "store/blob_store.h"
#include "store/store.h"

namespace gantry::api {

namespace fs = std::filesystem;

static Status BootstrapAdminKey(KeyRing* keys, const std::string& data_dir) {
  if (!keys->empty()) return Status::Ok();
  const char* env = getenv("GANTRY_ADMIN_KEY");
  if (env && *env) {
    keys->Add("admin", env, {});
    fprintf(stderr, "gantry: admin key taken from GANTRY_ADMIN_KEY\n");
    return Status::Ok();
  }
  auto [key, secret] = keys->Create("admin", {});
  std::string path = (fs::path(data_dir) / "admin.key").string();
  {
    std::ofstream f(path, std::ios::trunc);
    f << secret << "\n";
    if (!f) return Internal("cannot write " + path);
  }
  chmod(path.c_str(), 0600);
  printf("Admin API key (shown once; also in %s): %s\n", path.c_str(), secret.c_str());
  fflush(stdout);
  return Status::Ok();
}

int RunServer(const ServerConfig& config) {
  std::error_code ec;
  fs::create_directories(config.data_dir, ec);
  if (ec) {
    fprintf(stderr, "gantry: cannot create data dir %s: %s\n", config.data_dir.c_str(),
            ec.message().c_str());
    return 1;
  }
  SystemClock clock;
  http::EventLoop loop;
  store::SqliteOptions so;
  so.sync_full = config.sync_full;
  auto store =
      store::OpenSqliteStore((fs::path(config.data_dir) / "gantry.db").string(), so,
                             [&loop](std::function<void()> fn) { loop.Post(std::move(fn)); });
  if (!store.ok()) {
    fprintf(stderr, "gantry: %s\n", store.status().ToString().c_str());
    return 1;
  }
  jobs::JobsOptions jo;
  jo.run_retention_ms = config.run_retention_ms;
  jo.sync_retention_ms = config.sync_retention_ms;
  jo.stop_grace_ms = config.stop_grace_ms;
  jo.webhook_retry_ms = config.webhook_retry_ms;
  scheduling::Scheduler* scheduler_ptr = nullptr;
  const int64_t webhook_timeout_ms = jo.webhook_timeout_ms;
  jobs::JobManager jobs(
      &clock, store->get(), jo,
      [&loop, webhook_timeout_ms](const std::string& url, std::string body,
                                  std::function<void(bool)> done) {
        http::AsyncFetch(&loop, "POST", url, std::move(body), {}, webhook_timeout_ms,
                         [done = std::move(done)](Result<http::ClientResponse> r) {
                           done(r.ok() && r->status >= 200 && r->status < 300);
                         });
      },
      [&scheduler_ptr](const std::string& worker, const std::string& why) {
        if (scheduler_ptr) scheduler_ptr->Kill(worker, why);
      });
  scheduling::EndpointRegistry endpoints(&clock, store->get(), &jobs);
  scheduling::WorkerOptions wo;
  wo.ping_interval_ms = config.ping_interval_ms;
  scheduling::WorkerRegistry workers(&clock, store->get(), &jobs, wo);
  KeyRing keys(&clock, store->get());
  scheduling::LogStore logs(store->get());
  store::BlobStore blobs((fs::path(config.data_dir) / "blobs").string());
  if (Status b = blobs.Init(); !b.ok()) {
    fprintf(stderr, "gantry: %s\n", b.ToString().c_str());
    return 1;
  }
  scheduling::PriceTable prices = scheduling::DefaultPrices();
  if (!config.prices_file.empty()) {
    std::ifstream f(config.prices_file);
    std::stringstream ss;
    ss << f.rdbuf();
    auto v = ParseJson(ss.str());
    if (!f || !v.ok() || !v->is_object()) {
      fprintf(stderr, "gantry: --prices %s is not a JSON object\n", config.prices_file.c_str());
      return 2;
    }
    for (const auto& kv : v->as_object()) {
      if (!kv.value().is_number()) {
        fprintf(stderr, "gantry: --prices: %s is not a number\n", std::string(kv.key()).c_str());
        return 2;
      }
      prices[std::string(kv.key())] = kv.value().to_number<double>();
    }
  }
  scheduling::Metering metering(&clock, store->get(), prices);
  workers.SetStopListener(
      [&metering](const scheduling::WorkerInfo& w) { metering.WorkerStopped(w.id); });
  jobs.SetFinishListener(
      [&metering](const std::string& ep, int64_t ms) { metering.JobFinished(ep, ms); });
  ApiServer* api_ptr = nullptr;
  scheduling::Scheduler scheduler(
      &clock, &jobs, &endpoints, &workers, scheduling::SchedulerOptions{},
      [&api_ptr](const scheduling::EndpointSpec& spec, const scheduling::WorkerInfo& w,
                 const std::string& secret) { return api_ptr->WorkerEnv(spec, w, secret); },
      &metering);
  scheduler_ptr = &scheduler;
  jobs.SetEnqueueListener([&scheduler](const std::string& ep) { scheduler.Evaluate(ep); });
  endpoints.SetChangeListener(
      [&scheduler](const std::string& ep) { scheduler.EndpointChanged(ep); });

  auto job_records = (*store)->LoadJobs();
  Status st = job_records.ok() ? Status::Ok() : job_records.status();
  if (st.ok()) st = endpoints.Load();
  if (st.ok()) st = workers.Load();
  if (st.ok()) st = keys.Load();
  if (st.ok()) st = metering.Load();
  if (st.ok()) st = logs.Load();
  if (st.ok()) {
    size_t n = job_records->size();
    jobs.Load(std::move(*job_records));
    GLOG_INFO("loaded %zu jobs, %zu endpoints", n, endpoints.List().size());
  }
  if (st.ok()) st = BootstrapAdminKey(&keys, config.data_dir);
  if (!st.ok()) {
    fprintf(stderr, "gantry: %s\n", st.ToString().c_str());
    return 1;
  }

  ApiOptions ao;
  ao.run_body_limit = config.run_body_limit;
  ao.runsync_body_limit = config.runsync_body_limit;
  http::ServerOptions ho;
  ho.host = config.host;
  ho.port = config.port;
  ho.body_limit = std::max(config.run_body_limit, config.runsync_body_limit) + (64u << 10);
  http::HttpServer server(&loop, ho,
                          [&api_ptr](http::Request&& r, std::shared_ptr<http::Responder> p) {
                            api_ptr->Handle(std::move(r), std::move(p));
                          });
  st = server.Start();
  if (!st.ok()) {
    fprintf(stderr, "gantry: %s\n", st.ToString().c_str());
    return 1;
  }
  std::string host = config.host == "0.0.0.0" ? "127.0.0.1" : config.host;
  std::string url = "http://" + host + ":" + std::to_string(server.port());
  ao.public_url = config.public_url.empty() ? url : config.public_url;
  ApiServer api(&clock, &jobs, &endpoints, &workers, &scheduler, &logs, &metering, &blobs, &keys,
                ao);
  api_ptr = &api;

  loop.Every(20, [&] { jobs.Tick(); });
  loop.Every(500, [&] { workers.Tick(); });
  loop.Every(1000, [&] { metering.Flush(); });
  loop.Every(200, [&] {
    scheduler.Tick();
    logs.Expire(clock.NowMs());
  });
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
  if (config.on_listening) config.on_listening(url, keys.AddEphemeral("local-agent"));
  loop.Run();
  if (shutdown.joinable()) shutdown.join();
  metering.Flush();
  (*store)->Stop();  // every queued write is durable before we exit
  return 0;
}

}  // namespace gantry::api
