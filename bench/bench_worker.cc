// bench_worker: a RunPod-protocol echo worker for benchmarks.
//
// Each of --threads threads holds its own keep-alive HttpClient and loops: long-poll
// job-take-batch (up to --batch jobs), then post job-done {"output": <input>} for each job.
// All threads share one worker identity (the RUNPOD_* env of one registered worker).
//
// Configuration: flags, else the RUNPOD_* environment Gantry hands to a registered worker:
//   --get-job URL      RUNPOD_WEBHOOK_GET_JOB      (".../job-take/W?gpu=...")
//   --post-output URL  RUNPOD_WEBHOOK_POST_OUTPUT  (".../job-done/W/$ID?gpu=...")
//   --key KEY          RUNPOD_AI_API_KEY           (sent raw in Authorization)
//   --ping URL         RUNPOD_WEBHOOK_PING          (optional; pinged every RUNPOD_PING_INTERVAL ms)
//   --threads N        Default: 1.
//   --batch N          batch_size of job-take-batch. Default: 8.
//   --seconds S        exit after S seconds; 0 = until SIGTERM/SIGINT. Default: 0.
//   --quiet            no summary line on exit.
//
// Exit: on SIGTERM/SIGINT or after --seconds, prints "bench_worker: N jobs ..." to stderr and
// exits at once (threads blocked in a long-poll are not waited for; jobs they were about to get
// stay with the server, which is fine for a benchmark).

#include <pthread.h>
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "common/json.h"
#include "http/http.h"

namespace {

using gantry::json::value;

struct Config {
  std::string get_job;
  std::string post_output;
  std::string key;
  std::string ping;
  int64_t ping_interval_ms = 10'000;
  int threads = 1;
  int batch = 8;
  double seconds = 0;
  bool quiet = false;
};

struct Stats {
  std::atomic<int64_t> jobs{0};
  std::atomic<int64_t> takes{0};
  std::atomic<int64_t> empty_takes{0};
  std::atomic<int64_t> errors{0};
};

std::atomic<bool> g_stop{false};
Stats g_stats;

std::string EnvOr(const char* name, std::string fallback = "") {
  const char* v = getenv(name);
  return v && *v ? std::string(v) : fallback;
}

[[noreturn]] void Usage(const char* why) {
  fprintf(stderr,
          "bench_worker: %s\n"
          "usage: bench_worker [--get-job URL] [--post-output URL] [--key KEY] [--ping URL]\n"
          "                    [--threads N] [--batch N] [--seconds S] [--quiet]\n"
          "  (URLs and key default to RUNPOD_WEBHOOK_GET_JOB, RUNPOD_WEBHOOK_POST_OUTPUT,\n"
          "   RUNPOD_AI_API_KEY, RUNPOD_WEBHOOK_PING)\n",
          why);
  exit(2);
}

Config ParseArgs(int argc, char** argv) {
  Config c;
  c.get_job = EnvOr("RUNPOD_WEBHOOK_GET_JOB");
  c.post_output = EnvOr("RUNPOD_WEBHOOK_POST_OUTPUT");
  c.key = EnvOr("RUNPOD_AI_API_KEY");
  c.ping = EnvOr("RUNPOD_WEBHOOK_PING");
  c.ping_interval_ms = atoll(EnvOr("RUNPOD_PING_INTERVAL", "10000").c_str());
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) Usage(("missing value for " + a).c_str());
      return argv[++i];
    };
    if (a == "--get-job") c.get_job = next();
    else if (a == "--post-output") c.post_output = next();
    else if (a == "--key") c.key = next();
    else if (a == "--ping") c.ping = next();
    else if (a == "--threads") c.threads = atoi(next().c_str());
    else if (a == "--batch") c.batch = atoi(next().c_str());
    else if (a == "--seconds") c.seconds = atof(next().c_str());
    else if (a == "--quiet") c.quiet = true;
    else if (a == "-h" || a == "--help") Usage("help");
    else Usage(("unknown flag " + a).c_str());
  }
  if (c.get_job.empty() || c.post_output.empty() || c.key.empty()) {
    Usage("need the job-take URL, the job-done URL and the worker key");
  }
  if (c.threads < 1 || c.batch < 1) Usage("--threads and --batch must be >= 1");
  if (c.ping_interval_ms < 100) c.ping_interval_ms = 100;
  return c;
}

// "http://h:p/v2/ep/job-take/W?gpu=x" -> "/v2/ep/job-take-batch/W?gpu=x&batch_size=N&..."
std::string BatchTarget(const std::string& take_target, int batch) {
  std::string t = take_target;
  size_t pos = t.find("/job-take/");
  if (pos != std::string::npos) t.replace(pos, 10, "/job-take-batch/");
  t += t.find('?') == std::string::npos ? '?' : '&';
  t += "batch_size=" + std::to_string(batch) + "&job_in_progress=0";
  return t;
}

void Backoff() { std::this_thread::sleep_for(std::chrono::milliseconds(50)); }

void WorkerLoop(const Config& c, const gantry::http::Url& take, const gantry::http::Url& done) {
  gantry::http::HttpClient client(take.host, take.port);
  const std::string take_target = BatchTarget(take.target, c.batch);
  const std::vector<gantry::http::Header> headers{{"Authorization", c.key}};
  const std::string empty;
  // The job-done target split around "$ID", so each post is two appends.
  size_t id_pos = done.target.find("$ID");
  std::string done_pre = done.target.substr(0, id_pos);
  std::string done_post = id_pos == std::string::npos ? "" : done.target.substr(id_pos + 3);
  done_post += done_post.find('?') == std::string::npos && done_pre.find('?') == std::string::npos
                   ? "?isStream=false"
                   : "&isStream=false";
  std::string target, body;
  while (!g_stop.load(std::memory_order_relaxed)) {
    auto res = client.Do("GET", take_target, empty, headers, 90'000);
    g_stats.takes.fetch_add(1, std::memory_order_relaxed);
    if (!res.ok()) {
      g_stats.errors.fetch_add(1, std::memory_order_relaxed);
      if (!g_stop) fprintf(stderr, "bench_worker: take: %s\n", res.status().ToString().c_str());
      Backoff();
      continue;
    }
    if (res->status == 204) {
      g_stats.empty_takes.fetch_add(1, std::memory_order_relaxed);
      continue;
    }
    if (res->status != 200) {
      g_stats.errors.fetch_add(1, std::memory_order_relaxed);
      fprintf(stderr, "bench_worker: take: HTTP %d %s\n", res->status, res->body.c_str());
      Backoff();
      continue;
    }
    auto parsed = gantry::ParseJson(res->body);
    if (!parsed.ok() || !parsed->is_array()) {
      g_stats.errors.fetch_add(1, std::memory_order_relaxed);
      fprintf(stderr, "bench_worker: take: not a JSON array: %.200s\n", res->body.c_str());
      continue;
    }
    for (const value& job : parsed->as_array()) {
      if (!job.is_object()) continue;
      const value* id = gantry::Find(job.as_object(), "id");
      const value* input = gantry::Find(job.as_object(), "input");
      if (!id || !id->is_string()) continue;
      target.assign(done_pre);
      target.append(id->as_string().data(), id->as_string().size());
      target.append(done_post);
      body.assign("{\"output\":");
      body.append(input ? gantry::ToJson(*input) : "null");
      body.push_back('}');
      auto dr = client.Do("POST", target, body, headers, 30'000);
      if (!dr.ok() || dr->status != 200) {
        g_stats.errors.fetch_add(1, std::memory_order_relaxed);
        if (!g_stop) {
          fprintf(stderr, "bench_worker: job-done %s: %s\n", id->as_string().c_str(),
                  dr.ok() ? ("HTTP " + std::to_string(dr->status) + " " + dr->body).c_str()
                          : dr.status().ToString().c_str());
        }
        continue;
      }
      g_stats.jobs.fetch_add(1, std::memory_order_relaxed);
    }
  }
}

void PingLoop(const Config& c, const gantry::http::Url& ping) {
  gantry::http::HttpClient client(ping.host, ping.port);
  const std::vector<gantry::http::Header> headers{{"Authorization", c.key}};
  while (!g_stop) {
    (void)client.Do("GET", ping.target, "", headers, 5'000);
    for (int64_t slept = 0; slept < c.ping_interval_ms && !g_stop; slept += 100) {
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
  }
}

}  // namespace

int main(int argc, char** argv) {
  Config c = ParseArgs(argc, argv);
  auto take = gantry::http::ParseUrl(c.get_job);
  auto done = gantry::http::ParseUrl(c.post_output);
  if (!take.ok()) Usage(("bad job-take URL: " + take.status().ToString()).c_str());
  if (!done.ok()) Usage(("bad job-done URL: " + done.status().ToString()).c_str());

  // Signals go to the main thread only (sigtimedwait below); workers never see them.
  sigset_t sigs;
  sigemptyset(&sigs);
  sigaddset(&sigs, SIGTERM);
  sigaddset(&sigs, SIGINT);
  pthread_sigmask(SIG_BLOCK, &sigs, nullptr);

  auto start = std::chrono::steady_clock::now();
  std::vector<std::thread> threads;
  for (int i = 0; i < c.threads; ++i) threads.emplace_back(WorkerLoop, std::cref(c), *take, *done);
  if (!c.ping.empty()) {
    auto ping = gantry::http::ParseUrl(c.ping);
    if (ping.ok()) threads.emplace_back(PingLoop, std::cref(c), *ping);
  }

  for (;;) {
    timespec ts{1, 0};
    if (c.seconds > 0) {
      double left = c.seconds - std::chrono::duration<double>(std::chrono::steady_clock::now() -
                                                              start).count();
      if (left <= 0) break;
      if (left < 1) ts = {0, static_cast<long>(left * 1e9)};
    }
    int sig = sigtimedwait(&sigs, nullptr, &ts);
    if (sig == SIGTERM || sig == SIGINT) break;
  }
  g_stop = true;
  double secs =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  if (!c.quiet) {
    fprintf(stderr,
            "bench_worker: %lld jobs in %.1f s (%.0f jobs/s), %lld takes (%lld empty), "
            "%lld errors\n",
            static_cast<long long>(g_stats.jobs.load()), secs, g_stats.jobs.load() / secs,
            static_cast<long long>(g_stats.takes.load()),
            static_cast<long long>(g_stats.empty_takes.load()),
            static_cast<long long>(g_stats.errors.load()));
  }
  fflush(stderr);
  // Threads may be blocked in a 60 s long-poll: leave without joining them.
  _exit(0);
}
