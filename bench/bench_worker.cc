// bench_worker: a RunPod-protocol echo worker for benchmarks. Each job's output is its input.
//
// All --threads threads share one worker identity (the RUNPOD_* env of one registered worker)
// and each holds its own keep-alive connections. Two modes:
//
//   --mode async (default): like an SDK that runs a batch's jobs concurrently. Each thread keeps
//     one job-take-batch long-poll outstanding whenever it holds fewer than --batch jobs (asking
//     for the difference), and posts each job's job-done at once on a keep-alive connection of
//     its own, without waiting for earlier answers. A job-done answer waits for the server's
//     durable write, so not waiting for it keeps fsync latency off the take path.
//   --mode simple: each thread loops on one gantry::http::HttpClient: take a batch, then post
//     the job-done calls one after another (each waits for its durable answer), then take again.
//
// Configuration: flags, else the RUNPOD_* environment Gantry hands to a registered worker:
//   --get-job URL      RUNPOD_WEBHOOK_GET_JOB      (".../job-take/W?gpu=...")
//   --post-output URL  RUNPOD_WEBHOOK_POST_OUTPUT  (".../job-done/W/$ID?gpu=...")
//   --key KEY          RUNPOD_AI_API_KEY           (sent raw in Authorization)
//   --ping URL         RUNPOD_WEBHOOK_PING         (optional; pinged every RUNPOD_PING_INTERVAL ms)
//   --threads N        Default: 1.
//   --batch N          most jobs a thread holds (batch_size of job-take-batch). Default: 8.
//   --mode async|simple  Default: async.
//   --seconds S        exit after S seconds; 0 = until SIGTERM/SIGINT. Default: 0.
//   --quiet            no summary line on exit.
//
// Exit: on SIGTERM/SIGINT or after --seconds, prints "bench_worker: N jobs ..." to stderr and
// exits at once, without joining threads blocked in a long-poll (jobs the server hands to a
// take nobody reads any more are left IN_PROGRESS; fine for a benchmark).

#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <string_view>
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
  bool simple = false;
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
          "                    [--threads N] [--batch N] [--mode async|simple] [--seconds S]\n"
          "                    [--quiet]\n"
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
    if (a == "--get-job") {
      c.get_job = next();
    } else if (a == "--post-output") {
      c.post_output = next();
    } else if (a == "--key") {
      c.key = next();
    } else if (a == "--ping") {
      c.ping = next();
    } else if (a == "--threads") {
      c.threads = atoi(next().c_str());
    } else if (a == "--batch") {
      c.batch = atoi(next().c_str());
    } else if (a == "--seconds") {
      c.seconds = atof(next().c_str());
    } else if (a == "--quiet") {
      c.quiet = true;
    } else if (a == "--mode") {
      std::string m = next();
      if (m != "async" && m != "simple") Usage("--mode is async or simple");
      c.simple = m == "simple";
    } else if (a == "-h" || a == "--help") {
      Usage("help");
    } else {
      Usage(("unknown flag " + a).c_str());
    }
  }
  if (c.get_job.empty() || c.post_output.empty() || c.key.empty()) {
    Usage("need the job-take URL, the job-done URL and the worker key");
  }
  if (c.threads < 1 || c.batch < 1) Usage("--threads and --batch must be >= 1");
  if (c.ping_interval_ms < 100) c.ping_interval_ms = 100;
  return c;
}

// Counts an error; logs the first few, then every 1000th (a stopped server makes many).
void Error(const char* fmt, ...) __attribute__((format(printf, 1, 2)));
void Error(const char* fmt, ...) {
  int64_t n = g_stats.errors.fetch_add(1, std::memory_order_relaxed) + 1;
  if (g_stop.load(std::memory_order_relaxed) || (n > 5 && n % 1000 != 0)) return;
  va_list ap;
  va_start(ap, fmt);
  fprintf(stderr, "bench_worker: error %lld: ", static_cast<long long>(n));
  vfprintf(stderr, fmt, ap);
  fputc('\n', stderr);
  va_end(ap);
}

void Backoff() { std::this_thread::sleep_for(std::chrono::milliseconds(50)); }

// The request targets, derived once from the two URLs.
struct Targets {
  Targets(const gantry::http::Url& take, const gantry::http::Url& done) {
    // ".../job-take/W?gpu=x" -> ".../job-take-batch/W?gpu=x&job_in_progress=0&batch_size="
    take_prefix = take.target;
    size_t pos = take_prefix.find("/job-take/");
    if (pos != std::string::npos) take_prefix.replace(pos, 10, "/job-take-batch/");
    take_prefix += take_prefix.find('?') == std::string::npos ? '?' : '&';
    take_prefix += "job_in_progress=0&batch_size=";
    // The job-done target split around "$ID".
    size_t id_pos = done.target.find("$ID");
    done_pre = done.target.substr(0, id_pos);
    done_post = id_pos == std::string::npos ? "" : done.target.substr(id_pos + 3);
    done_post += done.target.find('?') == std::string::npos ? "?isStream=false" : "&isStream=false";
  }
  std::string Take(int n) const { return take_prefix + std::to_string(n); }
  std::string Done(std::string_view id) const {
    std::string t;
    t.reserve(done_pre.size() + id.size() + done_post.size());
    t.append(done_pre).append(id).append(done_post);
    return t;
  }
  std::string take_prefix, done_pre, done_post;
};

struct Job {
  std::string id;
  std::string body;  // {"output": <input>}
};

// Parses a job-take-batch answer into echo jobs; false when it is not a JSON array.
bool ParseJobs(const std::string& text, std::vector<Job>* out) {
  auto parsed = gantry::ParseJson(text);
  if (!parsed.ok() || !parsed->is_array()) return false;
  for (const value& job : parsed->as_array()) {
    if (!job.is_object()) continue;
    const value* id = gantry::Find(job.as_object(), "id");
    const value* input = gantry::Find(job.as_object(), "input");
    if (!id || !id->is_string()) continue;
    out->push_back({std::string(id->as_string().data(), id->as_string().size()),
                    "{\"output\":" + (input ? gantry::ToJson(*input) : "null") + "}"});
  }
  return true;
}

// ---- mode simple: one blocking HttpClient per thread ------------------------------------------

void SimpleLoop(const Config& c, const gantry::http::Url& take, const gantry::http::Url& done) {
  gantry::http::HttpClient client(take.host, take.port);
  const Targets targets(take, done);
  const std::string take_target = targets.Take(c.batch);
  const std::vector<gantry::http::Header> headers{{"Authorization", c.key}};
  std::vector<Job> jobs;
  while (!g_stop.load(std::memory_order_relaxed)) {
    auto res = client.Do("GET", take_target, "", headers, 90'000);
    g_stats.takes.fetch_add(1, std::memory_order_relaxed);
    if (!res.ok()) {
      Error("take: %s", res.status().ToString().c_str());
      Backoff();
      continue;
    }
    if (res->status == 204) {
      g_stats.empty_takes.fetch_add(1, std::memory_order_relaxed);
      continue;
    }
    jobs.clear();
    if (res->status != 200 || !ParseJobs(res->body, &jobs)) {
      Error("take: HTTP %d %.200s", res->status, res->body.c_str());
      Backoff();
      continue;
    }
    for (const Job& j : jobs) {
      auto dr = client.Do("POST", targets.Done(j.id), j.body, headers, 30'000);
      if (!dr.ok() || dr->status != 200) {
        Error("job-done %s: %s", j.id.c_str(),
              dr.ok() ? ("HTTP " + std::to_string(dr->status)).c_str()
                      : dr.status().ToString().c_str());
        continue;
      }
      g_stats.jobs.fetch_add(1, std::memory_order_relaxed);
    }
  }
}

// ---- mode async: one poll loop per thread -----------------------------------------------------

// One keep-alive HTTP/1.1 connection with at most one request in flight. Minimal on purpose:
// answers must carry Content-Length or have no body (Gantry's do).
class Conn {
 public:
  ~Conn() { Close(); }
  int fd() const { return fd_; }
  bool busy() const { return busy_; }
  const std::string& request() const { return request_; }

  // Sends `request` (reconnecting when needed); false when the connection failed.
  bool Send(const sockaddr_storage& addr, socklen_t len, std::string request) {
    request_ = std::move(request);
    in_.clear();
    for (int attempt = 0; attempt < 2; ++attempt) {  // a reused connection may be stale
      if (fd_ < 0 && !Connect(addr, len)) return false;
      if (SendAll()) {
        busy_ = true;
        return true;
      }
      Close();
    }
    return false;
  }

  enum class Read { kMore, kDone, kFailed };
  // Reads what arrived; kDone sets status and body.
  Read OnReadable(int* status, std::string* body) {
    char buf[16384];
    ssize_t r = recv(fd_, buf, sizeof buf, 0);
    if (r <= 0) {
      Close();
      return Read::kFailed;
    }
    in_.append(buf, static_cast<size_t>(r));
    size_t end = in_.find("\r\n\r\n");
    if (end == std::string::npos) return Read::kMore;
    if (in_.size() < 12 || in_.compare(0, 5, "HTTP/") != 0) {
      Close();
      return Read::kFailed;
    }
    size_t length = 0;
    bool close_after = false;
    for (size_t line = in_.find("\r\n"); line < end;) {
      size_t next = in_.find("\r\n", line + 2);
      std::string_view h(in_.data() + line + 2, next - line - 2);
      if (h.size() > 15 && strncasecmp(h.data(), "content-length:", 15) == 0) {
        length = strtoull(h.data() + 15, nullptr, 10);
      } else if (h.size() > 11 && strncasecmp(h.data(), "connection:", 11) == 0 &&
                 h.find("close") != std::string_view::npos) {
        close_after = true;
      }
      line = next;
    }
    if (in_.size() < end + 4 + length) return Read::kMore;
    *status = atoi(in_.c_str() + 9);
    body->assign(in_, end + 4, length);
    busy_ = false;
    if (close_after) Close();
    return Read::kDone;
  }

  void Close() {
    if (fd_ >= 0) close(fd_);
    fd_ = -1;
    busy_ = false;
  }

 private:
  bool Connect(const sockaddr_storage& addr, socklen_t len) {
    fd_ = socket(addr.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd_ < 0) return false;
    int one = 1;
    setsockopt(fd_, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (connect(fd_, reinterpret_cast<const sockaddr*>(&addr), len) != 0) {
      Close();
      return false;
    }
    return true;
  }
  bool SendAll() {
    size_t off = 0;
    while (off < request_.size()) {
      ssize_t w = send(fd_, request_.data() + off, request_.size() - off, MSG_NOSIGNAL);
      if (w <= 0) return false;
      off += static_cast<size_t>(w);
    }
    return true;
  }

  int fd_ = -1;
  bool busy_ = false;
  std::string request_;
  std::string in_;
};

bool Resolve(const std::string& host, uint16_t port, sockaddr_storage* addr, socklen_t* len) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* res = nullptr;
  if (getaddrinfo(host.c_str(), std::to_string(port).c_str(), &hints, &res) != 0 || !res) {
    return false;
  }
  memcpy(addr, res->ai_addr, res->ai_addrlen);
  *len = res->ai_addrlen;
  freeaddrinfo(res);
  return true;
}

// One thread of mode async: a job-take-batch long-poll kept outstanding while it holds fewer
// than --batch jobs, and each held job's job-done posted at once on a connection of its own.
class AsyncWorker {
 public:
  AsyncWorker(const Config& c, const gantry::http::Url& take, const gantry::http::Url& done)
      : c_(c),
        take_(take),
        done_(done),
        targets_(take, done),
        done_conns_(c.batch),
        done_ids_(c.batch),
        done_retried_(c.batch, 0) {}

  // Runs until g_stop; returns at once when a host cannot be resolved.
  void Run() {
    if (!Resolve(take_.host, take_.port, &take_addr_, &take_len_) ||
        !Resolve(done_.host, done_.port, &done_addr_, &done_len_)) {
      Error("cannot resolve %s or %s", take_.host.c_str(), done_.host.c_str());
      return;
    }
    while (!g_stop.load(std::memory_order_relaxed)) {
      if (!take_conn_.busy() && held_ < c_.batch) {
        if (!take_conn_.Send(take_addr_, take_len_,
                             Request("GET", targets_.Take(c_.batch - held_), take_, ""))) {
          Error("take: cannot connect to %s:%u", take_.host.c_str(), take_.port);
          Backoff();
          continue;
        }
      }
      PollOnce();
    }
  }

 private:
  std::string Request(const char* method, const std::string& target, const gantry::http::Url& url,
                      const std::string& body) const {
    std::string r;
    r.reserve(target.size() + body.size() + c_.key.size() + 128);
    r.append(method).append(" ").append(target).append(" HTTP/1.1\r\nHost: ").append(url.host);
    r.append(":").append(std::to_string(url.port)).append("\r\nAuthorization: ").append(c_.key);
    if (!body.empty()) {
      r.append("\r\nContent-Type: application/json\r\nContent-Length: ");
      r.append(std::to_string(body.size()));
    }
    r.append("\r\n\r\n").append(body);
    return r;
  }

  // Waits (at most 1 s) for answers on the busy connections and handles those that came.
  void PollOnce() {
    fds_.clear();
    which_.clear();
    if (take_conn_.busy()) {
      fds_.push_back({take_conn_.fd(), POLLIN, 0});
      which_.push_back(-1);
    }
    for (int i = 0; i < c_.batch; ++i) {
      if (done_conns_[i].busy()) {
        fds_.push_back({done_conns_[i].fd(), POLLIN, 0});
        which_.push_back(i);
      }
    }
    if (fds_.empty()) return;
    if (poll(fds_.data(), fds_.size(), 1000) <= 0) return;
    for (size_t k = 0; k < fds_.size(); ++k) {
      if (!fds_[k].revents) continue;
      if (which_[k] < 0) {
        OnTakeReadable();
      } else {
        OnDoneReadable(which_[k]);
      }
    }
  }

  // The take answered (or some of it came): posts the job-done of each job it handed over.
  void OnTakeReadable() {
    auto r = take_conn_.OnReadable(&status_, &body_);
    if (r == Conn::Read::kMore) return;
    g_stats.takes.fetch_add(1, std::memory_order_relaxed);
    if (r == Conn::Read::kFailed) {
      Error("take: connection failed");
      Backoff();
      return;
    }
    if (status_ == 204) {
      g_stats.empty_takes.fetch_add(1, std::memory_order_relaxed);
      return;
    }
    jobs_.clear();
    if (status_ != 200 || !ParseJobs(body_, &jobs_)) {
      Error("take: HTTP %d %.200s", status_, body_.c_str());
      Backoff();
      return;
    }
    for (const Job& j : jobs_) {
      int slot = 0;
      while (slot < c_.batch && done_conns_[slot].busy()) ++slot;
      if (slot == c_.batch) {  // the server sent more than asked for
        Error("take: more jobs than batch_size");
        break;
      }
      ++held_;
      PostDone(slot, j);
    }
  }

  // The job-done on `slot` answered (or some of it came); a failed connection is retried once.
  void OnDoneReadable(int slot) {
    auto r = done_conns_[slot].OnReadable(&status_, &body_);
    if (r == Conn::Read::kMore) return;
    if (r == Conn::Read::kFailed && !done_retried_[slot]) {  // job-done is idempotent
      done_retried_[slot] = 1;
      std::string again = done_conns_[slot].request();
      if (done_conns_[slot].Send(done_addr_, done_len_, std::move(again))) return;
    }
    --held_;
    if (r == Conn::Read::kFailed || status_ != 200) {
      Error("job-done %s: %s", done_ids_[slot].c_str(),
            r == Conn::Read::kFailed ? "connection failed"
                                     : ("HTTP " + std::to_string(status_)).c_str());
      return;
    }
    g_stats.jobs.fetch_add(1, std::memory_order_relaxed);
  }

  void PostDone(int slot, const Job& j) {
    done_ids_[slot] = j.id;
    done_retried_[slot] = 0;
    if (!done_conns_[slot].Send(done_addr_, done_len_,
                                Request("POST", targets_.Done(j.id), done_, j.body))) {
      Error("job-done %s: cannot send", j.id.c_str());
      --held_;
    }
  }

  const Config& c_;
  const gantry::http::Url& take_;
  const gantry::http::Url& done_;
  const Targets targets_;
  sockaddr_storage take_addr_{}, done_addr_{};
  socklen_t take_len_ = 0, done_len_ = 0;
  Conn take_conn_;
  std::vector<Conn> done_conns_;  // done_conns_[i] busy <=> one held job posted on it
  std::vector<std::string> done_ids_;
  std::vector<int> done_retried_;
  int held_ = 0;  // jobs taken whose job-done has not been answered
  std::vector<Job> jobs_;
  std::vector<pollfd> fds_;
  std::vector<int> which_;  // -1: take_conn_, else index into done_conns_
  int status_ = 0;
  std::string body_;
};

void AsyncLoop(const Config& c, const gantry::http::Url& take, const gantry::http::Url& done) {
  AsyncWorker(c, take, done).Run();
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
  for (int i = 0; i < c.threads; ++i) {
    threads.emplace_back(c.simple ? SimpleLoop : AsyncLoop, std::cref(c), *take, *done);
  }
  if (!c.ping.empty()) {
    auto ping = gantry::http::ParseUrl(c.ping);
    if (ping.ok()) threads.emplace_back(PingLoop, std::cref(c), *ping);
  }

  for (;;) {
    timespec ts{1, 0};
    if (c.seconds > 0) {
      double left = c.seconds -
                    std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      if (left <= 0) break;
      if (left < 1) ts = {0, static_cast<long>(left * 1e9)};
    }
    int sig = sigtimedwait(&sigs, nullptr, &ts);
    if (sig == SIGTERM || sig == SIGINT) break;
  }
  g_stop = true;
  double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
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
  // Threads may be blocked in a long-poll: leave without joining them.
  _exit(0);
}
