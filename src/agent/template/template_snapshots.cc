// TemplateManager's snapshots: checkpoints of ready templates to <dir>/<key>/, restores from
// them, and the snapshots found on disk at start. Both run on the manager's background thread,
// one at a time (job_). See template_manager.h for the contract.
#include <signal.h>

#include <filesystem>
#include <fstream>
#include <future>
#include <sstream>
#include <utility>

#include "agent/template/template_manager.h"
#include "agent/template/template_process.h"
#include "agent/template/template_wire.h"
#include "common/json.h"
#include "common/log.h"

namespace gantry::agent {
namespace fs = std::filesystem;

namespace {

// A restore whose pid is still taken is tried again this often, this many times.
constexpr int64_t kRestoreRetryMs = 500;
constexpr int kRestoreTries = 20;

int64_t DirectoryBytes(const std::string& dir) {
  std::error_code ec;
  int64_t total = 0;
  for (const auto& e : fs::recursive_directory_iterator(dir, ec)) {
    if (e.is_regular_file(ec)) total += static_cast<int64_t>(e.file_size(ec));
  }
  return total;
}

}  // namespace

std::string TemplateManager::SnapshotDir(const std::string& key) const {
  return options_.dir + "/" + key + "/snapshot";
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
    if (auto* v = Find(o, "hostNetwork"); v && v->is_bool()) s.host_network = v->as_bool();
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

void TemplateManager::RestoreAll() {
  if (!snapshotter_) return;
  std::vector<std::pair<std::string, Snapshot>> all(snapshots_.begin(), snapshots_.end());
  for (const auto& [key, s] : all) {
    Ensure(key, s.endpoint_id, s.version, ProcessSpec{}, s.host_network);
  }
}

Status TemplateManager::StartRestore(Template& t) {
  t.phase = Template::Phase::kRestoreQueued;
  t.since_ms = clock_->NowMs();
  if (!SnapshotsUsable()) return FailedPrecondition("snapshots are off");
  if (job_) return Status::Ok();  // Step() starts it once the background thread is free
  t.phase = Template::Phase::kRestoring;
  snapshots_[t.key].used_ms = clock_->NowMs();
  // Restored into the template's network namespace: a descriptor of the job's own, as the
  // template may be dropped while the job runs.
  auto netns = std::make_shared<Fd>(t.netns.get() < 0 ? -1 : dup(t.netns.get()));
  job_ = Job{t.key, true,
             std::async(std::launch::async,
                        [s = snapshotter_, dir = SnapshotDir(t.key), mode = options_.restore_mode,
                         netns] { return s->Restore(dir, mode, netns->get()); })};
  return Status::Ok();
}

bool TemplateManager::SnapshotsUsable() {
  if (!criu_usable_) {
    Status s = snapshotter_->Check();
    criu_usable_ = s.ok();
    if (!s.ok()) GLOG_WARN("templates: snapshots are off: %s", s.message().c_str());
  }
  return *criu_usable_;
}

bool TemplateManager::WantsCheckpoint(const Template& t) {
  return !t.container && options_.snapshots && snapshotter_ && !job_ && !snapshots_.count(t.key) &&
         !no_snapshot_.count(t.key) &&
         probe_.free_disk_kb(options_.dir) >= options_.min_free_disk_mb * 1024 && SnapshotsUsable();
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

void TemplateManager::StartDump(Template& t) {
  t.phase = Template::Phase::kCheckpointing;
  const std::string tmp = SnapshotDir(t.key) + ".tmp";
  std::error_code ec;
  fs::create_directories(tmp, ec);
  job_ = Job{t.key, false, std::async(std::launch::async, [s = snapshotter_, pid = t.pid, tmp] {
               Status st = s->Dump(pid, tmp, /*leave_running=*/true);
               return st.ok() ? Result<int>(0) : Result<int>(st);
             })};
}

void TemplateManager::FinishJob() {
  Job job = std::move(*job_);
  job_.reset();
  Result<int> r = job.result.get();
  auto it = templates_.find(job.key);
  Template* t = it == templates_.end() ? nullptr : it->second.get();
  if (job.restore) {
    FinishRestore(job.key, std::move(r), t);
  } else {
    FinishCheckpoint(job.key, std::move(r), t);
  }
}

void TemplateManager::FinishRestore(const std::string& key, Result<int> r, Template* t) {
  if (!r.ok()) {
    ++counters_.restore_failures;
    auto& retry = restore_retry_[key];
    if (r.status().code() == Code::kFailedPrecondition && ++retry.second < kRestoreTries) {
      // Its pid is still taken, e.g. by the original's zombie: the snapshot is fine.
      retry.first = clock_->NowMs() + kRestoreRetryMs;
      GLOG_INFO("templates: restore of %s must wait: %s", key.c_str(),
                r.status().message().substr(0, 120).c_str());
    } else {
      GLOG_WARN("templates: restore of %s failed (snapshot deleted): %s", key.c_str(),
                r.status().ToString().c_str());
      restore_retry_.erase(key);
      DeleteSnapshot(key);
    }
    if (t) Drop(key, "restore failed", /*failed=*/false);
    return;
  }
  restore_retry_.erase(key);
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
    Drop(key, "cannot adopt the restored template: " + adopted.status().message(), false);
    return;
  }
  ++counters_.restores;
  t->pid = pid;
  GLOG_INFO("templates: %s restored (pid %d) in %lld ms", key.c_str(), pid,
            static_cast<long long>(clock_->NowMs() - t->since_ms));
  kill(pid, SIGCONT);
  t->phase = Template::Phase::kReconnecting;
  t->since_ms = clock_->NowMs();
}

void TemplateManager::FinishCheckpoint(const std::string& key, Result<int> r, Template* t) {
  std::error_code ec;
  const std::string tmp = SnapshotDir(key) + ".tmp";
  if (r.ok() && t) {
    fs::remove_all(SnapshotDir(key), ec);
    fs::rename(tmp, SnapshotDir(key), ec);
    if (ec) r = Internal("cannot move the snapshot into place: " + ec.message());
  }
  if (r.ok() && t) {
    Snapshot s{t->endpoint_id,
               t->version,
               t->spec.cpu,
               t->spec.memory_mb,
               DirectoryBytes(SnapshotDir(key)),
               clock_->NowMs(),
               t->host_network};
    std::ofstream(options_.dir + "/" + key + "/meta.json")
        << ToJson(json::object{{"endpointId", s.endpoint_id},
                               {"version", s.version},
                               {"cpu", s.cpu},
                               {"memoryMb", s.memory_mb},
                               {"hostNetwork", s.host_network}});
    snapshots_[key] = s;
    GLOG_INFO("templates: %s checkpointed (%lld MB) in %lld ms", key.c_str(),
              static_cast<long long>(s.bytes >> 20),
              static_cast<long long>(clock_->NowMs() - t->since_ms));
  } else {
    fs::remove_all(tmp, ec);
    if (!r.ok()) {
      ++counters_.snapshot_failures;
      GLOG_WARN("templates: checkpoint of %s failed: %s", key.c_str(),
                r.status().ToString().c_str());
    }
  }
  if (t) {
    if (!r.ok()) no_snapshot_.insert(key);  // it keeps serving forks; no second try
    kill(t->pid, SIGCONT);
    t->phase = Template::Phase::kReconnecting;
    t->since_ms = clock_->NowMs();
  }
}

void TemplateManager::DeleteSnapshot(const std::string& key) {
  std::error_code ec;
  fs::remove_all(options_.dir + "/" + key, ec);
  snapshots_.erase(key);
  restore_retry_.erase(key);
}

}  // namespace gantry::agent
