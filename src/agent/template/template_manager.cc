#include "agent/template/template_manager.h"

#include <signal.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <deque>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <utility>

#include "agent/template/template_wire.h"
#include "common/json.h"
#include "common/log.h"
#include "common/procfs.h"

namespace gantry::agent {
namespace fs = std::filesystem;

namespace {

constexpr char kProcessPrefix[] = "tpl-";
constexpr size_t kKeptLines = 20;
constexpr int64_t kHandshakeTimeoutMs = 2'000;
// A restore whose pid is still taken is tried again this often, this many times.
constexpr int64_t kRestoreRetryMs = 500;
constexpr int kRestoreTries = 20;

// Variables that give a worker its identity: a template runs without them, and each fork gets
// its own. A template sees no GPU: CUDA must not be initialised before the fork.
bool IdentityVariable(const std::string& name) {
  return name.starts_with("RUNPOD_WEBHOOK_") || name == "RUNPOD_POD_ID" ||
         name == "RUNPOD_AI_API_KEY" || name == "RUNPOD_POD_HOSTNAME" ||
         name == "CUDA_VISIBLE_DEVICES" || name == "NVIDIA_VISIBLE_DEVICES";
}

int64_t DirectoryBytes(const std::string& dir) {
  std::error_code ec;
  int64_t total = 0;
  for (const auto& e : fs::recursive_directory_iterator(dir, ec)) {
    if (e.is_regular_file(ec)) total += static_cast<int64_t>(e.file_size(ec));
  }
  return total;
}

// Moves `pid` into the cgroups of these cgroup.procs files (for a process that cannot do it
// itself: a worker forked inside a container). False, logged, if a write failed. The first move
// after a quiet moment waits for an RCU grace period (bench/cgroup_move.py: 7 ms median, up to
// 15-23 ms here), which is why spares are moved ahead.
bool MoveInto(const std::vector<std::string>& procs, int pid) {
  bool ok = true;
  for (const std::string& f : procs) {
    std::ofstream out(f);
    out << pid;
    out.close();
    if (!out) {
      GLOG_WARN("templates: cannot move pid %d into %s", pid, f.c_str());
      ok = false;
    }
  }
  return ok;
}

}  // namespace

struct TemplateManager::Template {
  enum class Phase {
    kStarting,       // fresh process initialising; not yet connected
    kReady,          // connected and parked: forks are served
    kParking,        // asked to park for a checkpoint; waiting for it to stop
    kCheckpointing,  // the dump runs on the background thread
    kRestoreQueued,  // waiting for the background thread
    kRestoring,      // the restore runs on the background thread
    kReconnecting,   // continued after a dump or a restore; waiting for its handshake
  };
  std::string key, endpoint_id, process_id;
  int64_t version = 0;
  Phase phase = Phase::kStarting;
  ProcessSpec spec;  // the template process's spec (id, limits); its argv is the worker's
  int pid = 0;
  int listen_fd = -1, conn_fd = -1;
  std::string buffer;    // unread bytes from conn_fd
  int64_t since_ms = 0;  // when the phase began
  int64_t used_ms = 0;   // last fork (or creation)
  int64_t forks = 0;
  int64_t memory_kb = 0;
  std::deque<std::string> last_lines;
  std::string spare_cgroup;  // offered to the template for its next spare; "" for none
  std::vector<std::string> spare_cgroup_procs;  // its cgroup.procs files
  // A container template's spare being moved into spare_cgroup by the agent (it cannot join
  // from inside): whether it is there; invalid when no move was started.
  std::shared_future<bool> spare_move;
  int spare_seq = 0;
  // A container template: `pid` is the OCI runtime's, `init_pid` the container's init (the
  // template process itself); `workers`: its workers still running, by their pid in the
  // container, with the runtime's view of their ends.
  bool container = false;
  int init_pid = 0;
  std::map<int, std::shared_ptr<ExternalExit>> workers;

  ~Template() { CloseAll(); }
  void CloseConnection() {
    if (conn_fd >= 0) close(conn_fd);
    conn_fd = -1;
    buffer.clear();
  }
  void CloseAll() {
    CloseConnection();
    if (listen_fd >= 0) close(listen_fd);
    listen_fd = -1;
  }
};

TemplateManager::TemplateManager(const Clock* clock, ProcessRuntime* runtime,
                                 Snapshotter* snapshotter, TemplateOptions options, HostProbe probe)
    : clock_(clock),
      runtime_(runtime),
      snapshotter_(snapshotter),
      options_(std::move(options)),
      probe_(std::move(probe)) {
  if (!probe_.pss_kb) probe_.pss_kb = ProcessPssKb;
  if (!probe_.available_memory_kb) probe_.available_memory_kb = AvailableMemoryKb;
  if (!probe_.free_disk_kb) probe_.free_disk_kb = FreeDiskKb;
  std::error_code ec;
  fs::create_directories(options_.dir, ec);
  if (ec) GLOG_WARN("templates: cannot create %s: %s", options_.dir.c_str(), ec.message().c_str());
  LoadSnapshots();
}

TemplateManager::~TemplateManager() {
  if (job_ && job_->result.valid()) job_->result.wait();
}

std::string TemplateManager::Key(const std::string& endpoint_id, int64_t version) {
  return endpoint_id + "-v" + std::to_string(version);
}

bool TemplateManager::OwnsProcess(const std::string& process_id) {
  return process_id.starts_with(kProcessPrefix);
}

std::string TemplateManager::SnapshotDir(const std::string& key) const {
  return options_.dir + "/" + key + "/snapshot";
}

std::string TemplateManager::SocketName(const std::string& key) const {
  // Abstract (no file to clean up, no path length to mind) and the same for every agent that
  // uses this directory, so that a restored template finds the agent that restored it.
  return "gantry-" + Sha256Hex(fs::absolute(options_.dir).string()).substr(0, 12) + "-" + key;
}

void TemplateManager::LoadSnapshots() {
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(options_.dir, ec)) {
    if (!e.is_directory(ec)) continue;
    const std::string key = e.path().filename().string();
    std::ifstream in(e.path() / "meta.json");
    std::stringstream text;
    text << in.rdbuf();
    auto meta = ParseJson(text.str());
    if (!meta.ok() || !meta->is_object() || !fs::exists(SnapshotDir(key), ec)) {
      fs::remove_all(e.path(), ec);  // an unfinished checkpoint
      continue;
    }
    const auto& o = meta->as_object();
    Snapshot s;
    if (auto* v = Find(o, "endpointId"); v && v->is_string()) s.endpoint_id = v->as_string();
    if (auto* v = Find(o, "version")) s.version = AsInt(*v).value_or(0);
    if (auto* v = Find(o, "cpu"); v && v->is_number()) s.cpu = v->to_number<double>();
    if (auto* v = Find(o, "memoryMb")) s.memory_mb = AsInt(*v).value_or(0);
    s.bytes = DirectoryBytes(SnapshotDir(key));
    s.used_ms = clock_->NowMs();
    if (s.endpoint_id.empty() || Key(s.endpoint_id, s.version) != key) {
      fs::remove_all(e.path(), ec);
      continue;
    }
    snapshots_[key] = s;
    GLOG_INFO("templates: snapshot of %s on disk (%lld MB)", key.c_str(),
              static_cast<long long>(s.bytes >> 20));
  }
}

TemplateManager::State TemplateManager::Get(const std::string& key) const {
  auto it = templates_.find(key);
  if (it == templates_.end()) return State::kNone;
  switch (it->second->phase) {
    case Template::Phase::kStarting:
      return State::kStarting;
    case Template::Phase::kReady:
      return State::kReady;
    default:
      return State::kBusy;
  }
}

bool TemplateManager::HasSnapshot(const std::string& key) const {
  return snapshots_.count(key) > 0 && snapshotter_ != nullptr;
}

bool TemplateManager::Wanted(const std::string& key) const {
  return !templates_.count(key) && !failed_.count(key);
}

std::string TemplateManager::NewProcessId(const std::string& key) {
  return kProcessPrefix + key + "-" + NewId("", 6);
}

std::map<std::string, std::string> TemplateManager::TemplateEnvironment(
    const std::string& key, std::map<std::string, std::string> env, bool container) const {
  std::erase_if(env, [](const auto& kv) { return IdentityVariable(kv.first); });
  env["CUDA_VISIBLE_DEVICES"] = "";
  env["GANTRY_TEMPLATE_SOCKET"] = "@" + SocketName(key);
  if (container) env["GANTRY_TEMPLATE_CONTAINER"] = "1";
  return env;
}

TemplateManager::Template* TemplateManager::Listen(const std::string& key,
                                                   const std::string& endpoint_id, int64_t version,
                                                   const std::string& process_id) {
  auto t = std::make_unique<Template>();
  t->key = key;
  t->endpoint_id = endpoint_id;
  t->version = version;
  t->used_ms = clock_->NowMs();
  t->process_id = process_id;
  // Listen before the process can connect.
  const std::string name = SocketName(key);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (name.size() + 1 >= sizeof addr.sun_path) {
    failed_[key] = "endpoint id too long for a template socket name";
    return nullptr;
  }
  memcpy(addr.sun_path + 1, name.data(), name.size());  // sun_path[0] == 0: abstract
  t->listen_fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (t->listen_fd < 0 ||
      bind(t->listen_fd, reinterpret_cast<sockaddr*>(&addr),
           static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + 1 + name.size())) != 0 ||
      listen(t->listen_fd, 4) != 0) {
    GLOG_WARN("templates: %s: cannot listen on @%s: %s", key.c_str(), name.c_str(),
              strerror(errno));
    return nullptr;  // tried again on the next Ensure()
  }
  Template* ref = t.get();
  templates_[key] = std::move(t);
  return ref;
}

bool TemplateManager::EnsureContainer(const std::string& key, const std::string& endpoint_id,
                                      int64_t version, const ProcessSpec& container) {
  if (!Wanted(key)) return false;
  Template* t = Listen(key, endpoint_id, version, container.id);
  if (!t) return false;
  t->container = true;
  t->spec = container;
  t->spec.nice = options_.init_nice;
  auto pid = runtime_->Start(t->spec);
  if (!pid.ok()) {
    ++counters_.template_failures;
    Drop(key, "cannot start: " + pid.status().message(), /*failed=*/true);
    return false;
  }
  t->pid = *pid;
  t->phase = Template::Phase::kStarting;
  t->since_ms = clock_->NowMs();
  GLOG_INFO("templates: starting %s in a container (pid %d)", key.c_str(), t->pid);
  return true;
}

void TemplateManager::Ensure(const std::string& key, const std::string& endpoint_id,
                             int64_t version, const ProcessSpec& worker) {
  if (!Wanted(key)) return;
  if (auto r = restore_retry_.find(key);
      r != restore_retry_.end() && HasSnapshot(key) && clock_->NowMs() < r->second.first) {
    return;  // Step() tries again when it is due
  }
  Template* t = Listen(key, endpoint_id, version, NewProcessId(key));
  if (!t) return;
  Template& ref = *t;
  if (HasSnapshot(key)) {
    ref.spec.id = ref.process_id;
    ref.spec.cpu = snapshots_[key].cpu;
    ref.spec.memory_mb = snapshots_[key].memory_mb;
    if (Status s = StartRestore(ref); !s.ok()) {
      Drop(key, s.message(), /*failed=*/false);
      snapshots_.erase(key);
    }
  } else {
    StartFresh(ref, worker);
  }
}

void TemplateManager::RestoreAll() {
  if (!snapshotter_) return;
  std::vector<std::pair<std::string, Snapshot>> all(snapshots_.begin(), snapshots_.end());
  for (const auto& [key, s] : all) Ensure(key, s.endpoint_id, s.version, ProcessSpec{});
}

void TemplateManager::StartFresh(Template& t, const ProcessSpec& worker) {
  t.spec = worker;
  t.spec.id = t.process_id;
  t.spec.nice = options_.init_nice;
  t.spec.env = TemplateEnvironment(t.key, std::move(t.spec.env), /*container=*/false);
  auto pid = runtime_->Start(t.spec);
  if (!pid.ok()) {
    ++counters_.template_failures;
    Drop(t.key, "cannot start: " + pid.status().message(), /*failed=*/true);
    return;
  }
  t.pid = *pid;
  t.phase = Template::Phase::kStarting;
  t.since_ms = clock_->NowMs();
  GLOG_INFO("templates: starting %s (pid %d)", t.key.c_str(), t.pid);
}

Status TemplateManager::StartRestore(Template& t) {
  t.phase = Template::Phase::kRestoreQueued;
  t.since_ms = clock_->NowMs();
  if (!SnapshotsUsable()) return FailedPrecondition("snapshots are off");
  if (job_) return Status::Ok();  // Step() starts it once the background thread is free
  t.phase = Template::Phase::kRestoring;
  snapshots_[t.key].used_ms = clock_->NowMs();
  job_ = Job{t.key, true,
             std::async(std::launch::async,
                        [s = snapshotter_, dir = SnapshotDir(t.key), mode = options_.restore_mode] {
                          return s->Restore(dir, mode);
                        })};
  return Status::Ok();
}

Result<int> TemplateManager::Fork(const std::string& key, const ProcessSpec& worker) {
  auto it = templates_.find(key);
  if (it == templates_.end() || it->second->phase != Template::Phase::kReady) {
    return FailedPrecondition("no ready template for " + key);
  }
  Template& t = *it->second;
  const int64_t t0 = SystemClock().NowMs();
  bool spare = false;
  auto launch = [&](const ProcessSpec& spec, const LaunchContext& ctx) -> Result<int> {
    json::array procs;  // a container's template cannot see them: the runtime moves its workers
    if (!t.container) {
      for (const auto& p : ctx.cgroup_procs) procs.emplace_back(p);
    }
    json::object req{{"op", "fork"},
                     {"id", spec.id},
                     {"env", StringMapJson(spec.env)},
                     {"workdir", spec.workdir},
                     {"cgroupProcs", std::move(procs)},
                     {"agentPid", ctx.agent_pid}};
    GANTRY_RETURN_IF_ERROR(
        SendWithFds(t.conn_fd, ToJson(req) + "\n", {ctx.stdout_fd, ctx.stderr_fd}));
    auto line = ReadAnswer(t);
    if (!line.ok()) return line.status();
    auto reply = ParseJson(*line);
    if (!reply.ok() || !reply->is_object()) return Internal("bad answer from the template");
    const auto& o = reply->as_object();
    if (auto* e = Find(o, "error"); e && e->is_string()) {
      return Internal("template: " + std::string(e->as_string()));
    }
    auto* pid = Find(o, "pid");
    if (!pid || !AsInt(*pid)) return Internal("bad answer from the template");
    if (auto* sp = Find(o, "spare"); sp && sp->is_bool()) spare = sp->get_bool();
    bool came_in = false;      // the worker sits in a cgroup made ahead
    bool move_failed = false;  // a container's spare could not be moved into it
    if (auto* c = Find(o, "spareCgroup");
        c && c->is_string() && !t.spare_cgroup.empty() && c->as_string() == t.spare_cgroup) {
      came_in = !t.container || (t.spare_move.valid() && t.spare_move.get());  // done, normally
      move_failed = !came_in;
      t.spare_move = {};
      if (came_in) *ctx.in_cgroup = std::exchange(t.spare_cgroup, {});  // the runtime's now
    } else if (t.container && t.spare_move.valid()) {
      // The spare moved into the offered cgroup did not answer: it is gone (it died, or the
      // template forked on the spot without it). The cgroup goes, so that a new one is offered.
      move_failed = true;
    }
    const int answered = static_cast<int>(*AsInt(*pid));
    if (!t.container) return answered;
    // The pid in the container: its number here, found among the template's children.
    std::optional<int> host = ChildByNsPid(t.init_pid, answered);
    if (!host) {
      return Internal("worker pid " + std::to_string(answered) +
                      " of the template's container is not a child of its init");
    }
    auto exit = std::make_shared<ExternalExit>();
    t.workers[answered] = exit;
    if (ctx.external) *ctx.external = std::move(exit);
    // It waits, stopped, to be moved into its cgroups (which it cannot reach from inside), so
    // that none of its code runs outside its limits; then it is continued.
    const int64_t deadline = SystemClock().NowMs() + options_.fork_timeout_ms;
    while (ProcState(*host) != 'T' && SystemClock().NowMs() < deadline) usleep(100);
    if (!came_in) MoveInto(ctx.cgroup_procs, *host);
    if (move_failed) ReleaseSpareCgroup(t);  // the worker is not (or no longer) in it
    kill(*host, SIGCONT);
    return *host;
  };
  auto pid = runtime_->Launch(worker, launch);
  if (!pid.ok()) {
    ++counters_.fork_failures;
    GLOG_WARN("templates: fork of %s from %s failed: %s", worker.id.c_str(), key.c_str(),
              pid.status().ToString().c_str());
    Drop(key, "fork failed", /*failed=*/false);
    return pid.status();
  }
  ++counters_.forks;
  ++t.forks;
  OfferSpareCgroup(t);
  GLOG_INFO("templates: %s forked from %s in %lld ms%s", worker.id.c_str(), key.c_str(),
            static_cast<long long>(SystemClock().NowMs() - t0), spare ? " (spare)" : "");
  t.used_ms = clock_->NowMs();
  if (auto s = snapshots_.find(key); s != snapshots_.end()) s->second.used_ms = t.used_ms;
  return pid;
}

void TemplateManager::Accept(Template& t) {
  const int fd = accept4(t.listen_fd, nullptr, nullptr, SOCK_CLOEXEC);
  if (fd < 0) return;
  ucred cred{};
  socklen_t len = sizeof cred;
  // A container's template is the container's init, a child of the OCI runtime (t.pid).
  bool ours = getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) == 0 && cred.pid > 0;
  if (ours && cred.pid != t.pid) {
    const std::optional<ProcStat> peer = ReadProcStat(cred.pid);
    ours = t.container && peer && peer->ppid == t.pid;
  }
  if (!ours) {
    GLOG_WARN("templates: %s: refused a connection from pid %d (the template is %d)", t.key.c_str(),
              static_cast<int>(cred.pid), t.pid);
    close(fd);
    return;
  }
  t.CloseConnection();
  t.conn_fd = fd;
  t.init_pid = cred.pid;
  auto line = ReadLine(fd, &t.buffer, kHandshakeTimeoutMs);
  auto hello = line.ok() ? ParseJson(*line) : Result<json::value>(line.status());
  const json::value* op =
      hello.ok() && hello->is_object() ? Find(hello->as_object(), "op") : nullptr;
  if (!op || !op->is_string() || op->as_string() != "ready") {
    GLOG_WARN("templates: %s: bad handshake", t.key.c_str());
    t.CloseConnection();
    return;
  }
  const bool first = t.phase == Template::Phase::kStarting;
  GLOG_INFO("templates: %s ready (pid %d) after %lld ms", t.key.c_str(), t.pid,
            static_cast<long long>(clock_->NowMs() - t.since_ms));
  t.phase = Template::Phase::kReady;
  t.since_ms = clock_->NowMs();
  OfferSpareCgroup(t);
  if (first) {
    t.memory_kb = probe_.pss_kb(t.init_pid);
    // Initialised: the default priority for every thread of it, so that forks are fast.
    std::error_code ec;
    for (const auto& task :
         fs::directory_iterator("/proc/" + std::to_string(t.init_pid) + "/task", ec)) {
      setpriority(PRIO_PROCESS, std::stoi(task.path().filename().string()), 0);
    }
  }
}

void TemplateManager::OfferSpareCgroup(Template& t) {
  if (!t.spare_cgroup.empty() || t.conn_fd < 0) return;
  const std::string id = t.process_id + "-s" + std::to_string(++t.spare_seq);
  auto procs = runtime_->CreateCgroup(id, t.spec.limits());
  if (!procs.ok() || procs->empty()) return;  // no cgroups: the spare joins at its fork
  json::array files;
  for (const auto& p : *procs) files.emplace_back(p);
  json::object msg{{"op", "spare"}, {"id", id}, {"cgroupProcs", std::move(files)}};
  if (!SendWithFds(t.conn_fd, ToJson(msg) + "\n", {}).ok()) {
    runtime_->RemoveCgroup(id);
    return;
  }
  t.spare_cgroup = id;
  t.spare_cgroup_procs = *procs;
}

void TemplateManager::ReleaseSpareCgroup(Template& t) {
  if (t.spare_move.valid()) t.spare_move.wait();
  t.spare_move = {};
  if (t.spare_cgroup.empty()) return;
  runtime_->RemoveCgroup(t.spare_cgroup);  // kills the spare in it, if any
  t.spare_cgroup.clear();
}

bool TemplateManager::SnapshotsUsable() {
  if (!criu_usable_) {
    Status s = snapshotter_->Check();
    criu_usable_ = s.ok();
    if (!s.ok()) GLOG_WARN("templates: snapshots are off: %s", s.message().c_str());
  }
  return *criu_usable_;
}

Status TemplateManager::BeginCheckpoint(Template& t) {
  Status s = SendWithFds(t.conn_fd, "{\"op\":\"park\"}\n", {});
  if (!s.ok()) return Status(s.code(), "cannot park: " + s.message());
  t.CloseConnection();
  ReleaseSpareCgroup(t);  // the template closes its spare for the snapshot
  t.phase = Template::Phase::kParking;
  t.since_ms = clock_->NowMs();
  return Status::Ok();
}

void TemplateManager::FinishJob() {
  Job job = std::move(*job_);
  job_.reset();
  Result<int> r = job.result.get();
  auto it = templates_.find(job.key);
  Template* t = it == templates_.end() ? nullptr : it->second.get();
  std::error_code ec;
  const std::string tmp = SnapshotDir(job.key) + ".tmp";
  if (job.restore) {
    if (!r.ok()) {
      ++counters_.restore_failures;
      auto& retry = restore_retry_[job.key];
      if (r.status().code() == Code::kFailedPrecondition && ++retry.second < kRestoreTries) {
        // Its pid is still taken, e.g. by the original's zombie: the snapshot is fine.
        retry.first = clock_->NowMs() + kRestoreRetryMs;
        GLOG_INFO("templates: restore of %s must wait: %s", job.key.c_str(),
                  r.status().message().substr(0, 120).c_str());
      } else {
        GLOG_WARN("templates: restore of %s failed (snapshot deleted): %s", job.key.c_str(),
                  r.status().ToString().c_str());
        restore_retry_.erase(job.key);
        DeleteSnapshot(job.key);
      }
      if (t) Drop(job.key, "restore failed", /*failed=*/false);
      return;
    }
    restore_retry_.erase(job.key);
    const int pid = *r;
    if (!t) {  // dropped meanwhile
      kill(pid, SIGKILL);
      return;
    }
    // The runtime adopts the restored process (a child of ours: we are its subreaper).
    auto adopted = runtime_->Launch(
        t->spec, [pid](const ProcessSpec&, const LaunchContext&) { return Result<int>(pid); });
    if (!adopted.ok()) {
      kill(pid, SIGKILL);
      ++counters_.restore_failures;
      Drop(job.key, "cannot adopt the restored template: " + adopted.status().message(), false);
      return;
    }
    ++counters_.restores;
    t->pid = pid;
    GLOG_INFO("templates: %s restored (pid %d) in %lld ms", job.key.c_str(), pid,
              static_cast<long long>(clock_->NowMs() - t->since_ms));
    kill(pid, SIGCONT);
    t->phase = Template::Phase::kReconnecting;
    t->since_ms = clock_->NowMs();
    return;
  }
  // A checkpoint.
  if (r.ok() && t) {
    fs::remove_all(SnapshotDir(job.key), ec);
    fs::rename(tmp, SnapshotDir(job.key), ec);
    if (ec) r = Internal("cannot move the snapshot into place: " + ec.message());
  }
  if (r.ok() && t) {
    Snapshot s{t->endpoint_id,
               t->version,
               t->spec.cpu,
               t->spec.memory_mb,
               DirectoryBytes(SnapshotDir(job.key)),
               clock_->NowMs()};
    std::ofstream(options_.dir + "/" + job.key + "/meta.json")
        << ToJson(json::object{{"endpointId", s.endpoint_id},
                               {"version", s.version},
                               {"cpu", s.cpu},
                               {"memoryMb", s.memory_mb}});
    snapshots_[job.key] = s;
    GLOG_INFO("templates: %s checkpointed (%lld MB) in %lld ms", job.key.c_str(),
              static_cast<long long>(s.bytes >> 20),
              static_cast<long long>(clock_->NowMs() - t->since_ms));
  } else {
    fs::remove_all(tmp, ec);
    if (!r.ok()) {
      ++counters_.snapshot_failures;
      GLOG_WARN("templates: checkpoint of %s failed: %s", job.key.c_str(),
                r.status().ToString().c_str());
    }
  }
  if (t) {
    if (!r.ok()) no_snapshot_.insert(job.key);  // it keeps serving forks; no second try
    kill(t->pid, SIGCONT);
    t->phase = Template::Phase::kReconnecting;
    t->since_ms = clock_->NowMs();
  }
}

void TemplateManager::Drop(std::string key, const std::string& why, bool failed) {
  auto it = templates_.find(key);
  if (it != templates_.end() && it->second->container && !it->second->workers.empty() &&
      it->second->pid > 0 && it->second->conn_fd >= 0 &&
      SendWithFds(it->second->conn_fd, "{\"op\":\"retire\"}\n", {}).ok()) {
    // Its exit would end its workers: it exits after the last one instead.
    GLOG_INFO("templates: %s retired (%s): it exits after its %zu workers", key.c_str(),
              why.c_str(), it->second->workers.size());
    ReleaseSpareCgroup(*it->second);  // it closes its spare
    retiring_[it->second->process_id] = std::move(it->second);
    templates_.erase(it);
    if (failed) failed_[key] = why;
    return;
  }
  if (it != templates_.end()) {
    Template& t = *it->second;
    if (t.pid > 0) runtime_->Stop(t.process_id, 0);
    WorkersKilled(t);
    ReleaseSpareCgroup(t);
    std::string lines;
    for (const auto& l : t.last_lines) lines += "\n  " + l;
    GLOG_WARN("templates: %s dropped: %s%s", key.c_str(), why.c_str(), lines.c_str());
    templates_.erase(it);
  }
  if (failed) failed_[key] = why;
}

void TemplateManager::DeleteSnapshot(const std::string& key) {
  std::error_code ec;
  fs::remove_all(options_.dir + "/" + key, ec);
  snapshots_.erase(key);
  restore_retry_.erase(key);
}

void TemplateManager::Retain(const std::map<std::string, int64_t>& live) {
  auto stale = [&](const std::string& endpoint_id, int64_t version) {
    auto it = live.find(endpoint_id);
    return it == live.end() || it->second != version;
  };
  std::vector<std::string> old;
  for (const auto& [key, t] : templates_) {
    if (stale(t->endpoint_id, t->version)) old.push_back(key);
  }
  for (const auto& key : old) Drop(key, "not a current endpoint version", /*failed=*/false);
  old.clear();
  for (const auto& [key, s] : snapshots_) {
    if (stale(s.endpoint_id, s.version)) old.push_back(key);
  }
  for (const auto& key : old) {
    if (job_ && job_->key == key) continue;  // in use: the next Retain() after the job deletes it
    GLOG_INFO("templates: snapshot of %s deleted: not a current endpoint version", key.c_str());
    DeleteSnapshot(key);
  }
}

void TemplateManager::OnExit(const ProcessExit& exit) {
  if (auto r = retiring_.find(exit.id); r != retiring_.end()) {
    WorkersKilled(*r->second);
    retiring_.erase(r);
    return;
  }
  for (auto& [key, t] : templates_) {
    if (t->process_id != exit.id) continue;
    ++counters_.template_failures;
    const bool never_ready = t->phase == Template::Phase::kStarting;
    std::string why = "its process exited (code " + std::to_string(exit.exit_code) +
                      (exit.term_signal ? ", signal " + std::to_string(exit.term_signal) : "") +
                      ")";
    if (never_ready) {
      why +=
          " before it parked: does the worker call serverless.start() of the Gantry or "
          "RunPod SDK? Its workers start in full";
    }
    t->pid = 0;  // reaped: nothing to stop
    WorkersKilled(*t);
    Drop(key, why, /*failed=*/never_ready);
    return;
  }
}

void TemplateManager::OnLog(const LogLine& line) {
  for (auto& [key, t] : templates_) {
    if (t->process_id != line.id) continue;
    t->last_lines.push_back(line.text);
    if (t->last_lines.size() > kKeptLines) t->last_lines.pop_front();
    return;
  }
}

bool TemplateManager::Step() {
  bool changed = false;
  if (job_ && job_->result.wait_for(std::chrono::seconds(0)) == std::future_status::ready) {
    FinishJob();
    changed = true;
  }
  const int64_t now = clock_->NowMs();
  // Dropped after the loop (Drop erases from templates_); `counted`: a template failure.
  struct PendingDrop {
    std::string key, why;
    bool counted = true;
    bool forget_snapshot = false;
  };
  std::vector<PendingDrop> drops;
  for (auto& [key, tp] : templates_) {
    Template& t = *tp;
    const int64_t age = now - t.since_ms;
    switch (t.phase) {
      case Template::Phase::kStarting:
      case Template::Phase::kReconnecting:
        Accept(t);
        if (t.phase == Template::Phase::kReady) {
          changed = true;
        } else if (age > options_.ready_timeout_ms) {
          drops.push_back({key, "not parked after " + std::to_string(age) + " ms"});
        }
        break;
      case Template::Phase::kReady:
        if (!t.container && options_.snapshots && snapshotter_ && !job_ && !snapshots_.count(key) &&
            !no_snapshot_.count(key) &&
            probe_.free_disk_kb(options_.dir) >= options_.min_free_disk_mb * 1024 &&
            SnapshotsUsable()) {
          if (Status s = BeginCheckpoint(t); !s.ok()) {
            drops.push_back({key, s.message(), /*counted=*/false});
          }
          changed = true;
        }
        break;
      case Template::Phase::kParking:
        if (ProcState(t.pid) == 'T') {
          if (job_) break;
          t.phase = Template::Phase::kCheckpointing;
          const std::string tmp = SnapshotDir(key) + ".tmp";
          std::error_code ec;
          fs::create_directories(tmp, ec);
          job_ =
              Job{key, false, std::async(std::launch::async, [s = snapshotter_, pid = t.pid, tmp] {
                    Status st = s->Dump(pid, tmp, /*leave_running=*/true);
                    return st.ok() ? Result<int>(0) : Result<int>(st);
                  })};
        } else if (age > options_.park_timeout_ms) {
          drops.push_back({key, "did not stop for its checkpoint"});
        }
        break;
      case Template::Phase::kRestoreQueued:
        if (job_) break;
        if (Status s = StartRestore(t); !s.ok()) {
          drops.push_back({key, s.message(), /*counted=*/false, /*forget_snapshot=*/true});
        }
        break;
      case Template::Phase::kCheckpointing:
      case Template::Phase::kRestoring:
        break;
    }
  }
  for (const PendingDrop& d : drops) {
    if (d.counted) ++counters_.template_failures;
    Drop(d.key, d.why,
         /*failed=*/d.counted && templates_.count(d.key) &&
             templates_[d.key]->phase == Template::Phase::kStarting);
    if (d.forget_snapshot) snapshots_.erase(d.key);
    changed = true;
  }
  for (const auto& [key, retry] : std::map(restore_retry_)) {
    if (now >= retry.first && !templates_.count(key) && snapshots_.count(key)) {
      Ensure(key, snapshots_[key].endpoint_id, snapshots_[key].version, ProcessSpec{});
      changed = true;
    }
  }
  if (now - last_budget_check_ms_ >= options_.budget_check_ms) {
    last_budget_check_ms_ = now;
    EnforceBudgets();
  }
  return changed;
}

void TemplateManager::EnforceBudgets() {
  int64_t total_kb = 0;
  for (auto& [key, t] : templates_) {
    if (t->phase == Template::Phase::kReady) t->memory_kb = probe_.pss_kb(t->init_pid);
    total_kb += t->memory_kb;
  }
  const int64_t budget_kb = options_.memory_budget_mb * 1024;
  if (total_kb > budget_kb) {
    EvictTemplates(total_kb - budget_kb, "over the templates' memory budget (" +
                                             std::to_string(options_.memory_budget_mb) + " MB)");
  }
  const int64_t short_kb = options_.min_available_memory_mb * 1024 - probe_.available_memory_kb();
  if (short_kb > 0) EvictTemplates(short_kb, "the host is short of memory");

  int64_t disk = 0;
  for (const auto& [key, s] : snapshots_) disk += s.bytes;
  const int64_t budget = options_.disk_budget_mb << 20;
  if (disk > budget) {
    EvictSnapshots(disk - budget, "over the snapshots' disk budget (" +
                                      std::to_string(options_.disk_budget_mb) + " MB)");
  }
  const int64_t short_bytes =
      (options_.min_free_disk_mb * 1024 - probe_.free_disk_kb(options_.dir)) * 1024;
  if (short_bytes > 0) EvictSnapshots(short_bytes, "the disk is short of space");
}

void TemplateManager::EvictTemplates(int64_t kb, const std::string& why) {
  const int64_t budget_kb = options_.memory_budget_mb * 1024;
  while (kb > 0) {
    Template* lru = nullptr;
    for (auto& [key, t] : templates_) {
      if (t->phase == Template::Phase::kReady && (!lru || t->used_ms < lru->used_ms)) {
        lru = t.get();
      }
    }
    if (!lru) return;
    kb -= std::max<int64_t>(lru->memory_kb, 1);
    ++counters_.evictions;
    Drop(lru->key, why, /*failed=*/lru->memory_kb > budget_kb);  // too big ever to keep
  }
}

void TemplateManager::EvictSnapshots(int64_t bytes, const std::string& why) {
  const int64_t budget = options_.disk_budget_mb << 20;
  while (bytes > 0) {
    auto lru = snapshots_.end();
    for (auto it = snapshots_.begin(); it != snapshots_.end(); ++it) {
      if (job_ && job_->key == it->first) continue;
      if (lru == snapshots_.end() || it->second.used_ms < lru->second.used_ms) lru = it;
    }
    if (lru == snapshots_.end()) return;
    bytes -= std::max<int64_t>(lru->second.bytes, 1);
    ++counters_.evictions;
    GLOG_INFO("templates: snapshot of %s evicted: %s", lru->first.c_str(), why.c_str());
    if (lru->second.bytes > budget) no_snapshot_.insert(lru->first);
    DeleteSnapshot(lru->first);
  }
}

Result<std::string> TemplateManager::ReadAnswer(Template& t) {
  const int64_t deadline = SystemClock().NowMs() + options_.fork_timeout_ms;
  for (;;) {
    auto line =
        ReadLine(t.conn_fd, &t.buffer, std::max<int64_t>(deadline - SystemClock().NowMs(), 0));
    if (!line.ok() || !t.container || !HandleReport(t, *line)) return line;
  }
}

bool TemplateManager::HandleReport(Template& t, const std::string& line) {
  auto msg = ParseJson(line);
  if (!msg.ok() || !msg->is_object()) return false;
  const auto& o = msg->as_object();
  const json::value* op = Find(o, "op");
  if (op && op->is_string() && op->as_string() == "spare-made") {
    // The spare the template made for the cgroup offered: the agent moves it there now, off
    // the fork's path (a move into a cgroup v1 memory controller waits for an RCU grace
    // period, tens of ms here), on a thread of its own.
    const json::value* pid = Find(o, "pid");
    const json::value* id = Find(o, "id");
    std::optional<int> host = pid && AsInt(*pid)
                                  ? ChildByNsPid(t.init_pid, static_cast<int>(*AsInt(*pid)))
                                  : std::nullopt;
    if (host && id && id->is_string() && id->as_string() == t.spare_cgroup &&
        !t.spare_move.valid()) {
      t.spare_move = std::async(std::launch::async, [procs = t.spare_cgroup_procs, p = *host] {
                       return MoveInto(procs, p);
                     }).share();
    }
    return true;
  }
  if (!op || !op->is_string() || op->as_string() != "exit") return false;
  const json::value* pid = Find(o, "pid");
  const json::value* status = Find(o, "status");
  if (pid && status && AsInt(*pid) && AsInt(*status)) {
    if (auto w = t.workers.find(static_cast<int>(*AsInt(*pid))); w != t.workers.end()) {
      w->second->wait_status = static_cast<int>(*AsInt(*status));
      t.workers.erase(w);
    }
  }
  return true;
}

void TemplateManager::WorkersKilled(Template& t) {
  for (auto& [pid, exit] : t.workers) {
    if (!exit->wait_status) exit->wait_status = SIGKILL;  // a wait status: killed by SIGKILL
  }
  t.workers.clear();
}

void TemplateManager::ReadReports() {
  auto read = [this](Template& t) {
    if (!t.container || t.conn_fd < 0) return;
    for (;;) {
      auto line = ReadLine(t.conn_fd, &t.buffer, /*timeout_ms=*/0);
      if (!line.ok()) {
        if (line.status().code() == Code::kDeadlineExceeded) return;  // nothing more now
        t.CloseConnection();  // the template is gone, and its PID namespace with it
        WorkersKilled(t);
        return;
      }
      if (!HandleReport(t, *line)) {
        GLOG_WARN("templates: %s: unexpected message: %s", t.key.c_str(),
                  line->substr(0, 200).c_str());
      }
    }
  };
  for (auto& [key, t] : templates_) read(*t);
  for (auto& [id, t] : retiring_) read(*t);
}

std::vector<TemplateReport> TemplateManager::Reports() const {
  std::vector<TemplateReport> out;
  for (const auto& [key, t] : templates_) {
    TemplateReport r;
    r.endpoint_id = t->endpoint_id;
    r.version = t->version;
    r.state = t->phase == Template::Phase::kStarting ? "starting"
              : t->phase == Template::Phase::kReady  ? "ready"
                                                     : "busy";
    r.pid = t->pid;
    r.memory_kb = t->memory_kb;
    r.forks = t->forks;
    r.container = t->container;
    out.push_back(r);
  }
  for (const auto& [key, s] : snapshots_) {
    auto it = std::find_if(out.begin(), out.end(), [&](const TemplateReport& r) {
      return r.endpoint_id == s.endpoint_id && r.version == s.version;
    });
    if (it == out.end()) {
      out.push_back(TemplateReport{s.endpoint_id, s.version});
      it = out.end() - 1;
    }
    it->snapshot = true;
    it->snapshot_bytes = s.bytes;
  }
  return out;
}

}  // namespace gantry::agent
