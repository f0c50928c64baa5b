// TemplateManager: templates started, restored and dropped, their handshakes, their budgets and
// reports. Checkpoints and restores are in template_snapshots.cc, forks in template_fork.cc.
// See template_manager.h for the contract.
#include "agent/template/template_manager.h"

#include <sched.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <thread>
#include <utility>

#include "agent/template/template_process.h"
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

// Variables that give a worker its identity: a template runs without them, and each fork gets
// its own. A template sees no GPU: CUDA must not be initialised before the fork.
bool IdentityVariable(const std::string& name) {
  return name.starts_with("RUNPOD_WEBHOOK_") || name == "RUNPOD_POD_ID" ||
         name == "RUNPOD_AI_API_KEY" || name == "RUNPOD_POD_HOSTNAME" ||
         name == "CUDA_VISIBLE_DEVICES" || name == "NVIDIA_VISIBLE_DEVICES";
}

}  // namespace

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

std::string TemplateManager::SocketName(const std::string& key) const {
  // Abstract (no file to clean up, no path length to mind) and the same for every agent that
  // uses this directory, so that a restored template finds the agent that restored it.
  return "gantry-" + Sha256Hex(fs::absolute(options_.dir).string()).substr(0, 12) + "-" + key;
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
                                                   const std::string& process_id,
                                                   bool host_network) {
  auto t = std::make_unique<Template>();
  t->key = key;
  t->endpoint_id = endpoint_id;
  t->version = version;
  t->used_ms = clock_->NowMs();
  t->process_id = process_id;
  t->host_network = host_network;
  if (!host_network && options_.new_network) {
    auto ns = options_.new_network();
    if (!ns.ok()) {
      GLOG_WARN("templates: %s: no network namespace: %s", key.c_str(),
                ns.status().ToString().c_str());
      return nullptr;  // tried again on the next Ensure()
    }
    t->netns = std::move(*ns);
  }
  // Listen before the process can connect, in its network namespace: an abstract socket is
  // only reachable from the namespace it was made in.
  const std::string name = SocketName(key);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (name.size() + 1 >= sizeof addr.sun_path) {
    failed_[key] = "endpoint id too long for a template socket name";
    return nullptr;
  }
  memcpy(addr.sun_path + 1, name.data(), name.size());  // sun_path[0] == 0: abstract
  if (t->netns.get() >= 0) {
    std::thread([&] {  // setns() moves the calling thread only
      if (setns(t->netns.get(), CLONE_NEWNET) == 0) {
        t->listen_fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
      }
    })
        .join();
  } else {
    t->listen_fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  }
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
                                      int64_t version, const ProcessSpec& container,
                                      bool host_network) {
  if (!Wanted(key)) return false;
  Template* t = Listen(key, endpoint_id, version, container.id, host_network);
  if (!t) return false;
  t->container = true;
  t->spec = container;
  t->spec.nice = options_.init_nice;
  t->spec.netns_fd = t->netns.get();  // the OCI runtime starts in it; the container shares it
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
                             int64_t version, const ProcessSpec& worker, bool host_network) {
  if (!Wanted(key)) return;
  if (auto r = restore_retry_.find(key);
      r != restore_retry_.end() && HasSnapshot(key) && clock_->NowMs() < r->second.first) {
    return;  // Step() tries again when it is due
  }
  Template* t = Listen(key, endpoint_id, version, NewProcessId(key), host_network);
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

void TemplateManager::StartFresh(Template& t, const ProcessSpec& worker) {
  t.spec = worker;
  t.spec.id = t.process_id;
  t.spec.nice = options_.init_nice;
  t.spec.netns_fd = t.netns.get();
  t.container = t.spec.view.has_value();  // the init of its PID namespace (template_process.h)
  t.spec.env = TemplateEnvironment(t.key, std::move(t.spec.env), t.container);
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
  t.joins_cgroups = t.container || cred.uid == geteuid();
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

void TemplateManager::Drop(std::string key, const std::string& why, bool failed) {
  auto it = templates_.find(key);
  if (it != templates_.end() && it->second->container && !it->second->workers.empty() &&
      it->second->pid > 0 && it->second->conn_fd >= 0 &&
      SendWithFds(it->second->conn_fd, "{\"op\":\"retire\"}\n", {}).ok()) {
    // Its exit would end its workers: it exits after the last one instead.
    GLOG_INFO("templates: %s retired (%s): it exits after its %zu workers", key.c_str(),
              why.c_str(), it->second->workers.size());
    ReleaseSpareCgroup(*it->second);  // it closes its spare
    ++counters_.retirements;
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
  std::vector<PendingDrop> drops;
  for (auto& [key, t] : templates_) {
    if (Advance(*t, now, &drops)) changed = true;
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
      Ensure(key, snapshots_[key].endpoint_id, snapshots_[key].version, ProcessSpec{},
             snapshots_[key].host_network);
      changed = true;
    }
  }
  if (now - last_budget_check_ms_ >= options_.budget_check_ms) {
    last_budget_check_ms_ = now;
    EnforceBudgets();
  }
  return changed;
}

bool TemplateManager::Advance(Template& t, int64_t now, std::vector<PendingDrop>* drops) {
  const int64_t age = now - t.since_ms;
  switch (t.phase) {
    case Template::Phase::kStarting:
    case Template::Phase::kReconnecting:
      Accept(t);
      if (t.phase == Template::Phase::kReady) return true;
      if (age > options_.ready_timeout_ms) {
        drops->push_back({t.key, "not parked after " + std::to_string(age) + " ms"});
      }
      return false;
    case Template::Phase::kReady:
      if (!WantsCheckpoint(t)) return false;
      if (Status s = BeginCheckpoint(t); !s.ok()) {
        drops->push_back({t.key, s.message(), /*counted=*/false});
      }
      return true;
    case Template::Phase::kParking:
      if (ProcState(t.pid) == 'T') {
        if (!job_) StartDump(t);
      } else if (age > options_.park_timeout_ms) {
        drops->push_back({t.key, "did not stop for its checkpoint"});
      }
      return false;
    case Template::Phase::kRestoreQueued:
      if (job_) return false;
      if (Status s = StartRestore(t); !s.ok()) {
        drops->push_back({t.key, s.message(), /*counted=*/false, /*forget_snapshot=*/true});
      }
      return false;
    case Template::Phase::kCheckpointing:
    case Template::Phase::kRestoring:
      return false;
  }
  return false;
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

std::vector<TemplateReport> TemplateManager::Reports() const {
  std::vector<TemplateReport> out;
  for (const auto& [key, t] : templates_) {
    TemplateReport r;
    r.endpoint_id = t->endpoint_id;
    r.version = t->version;
    r.state = t->phase == Template::Phase::kStarting ? TemplateState::kStarting
              : t->phase == Template::Phase::kReady  ? TemplateState::kReady
                                                     : TemplateState::kBusy;
    r.pid = t->pid;
    r.memory_kb = t->memory_kb;
    r.forks = t->forks;
    r.container = t->container && !t->spec.view;
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
