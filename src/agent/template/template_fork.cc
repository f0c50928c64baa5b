// TemplateManager's forks: workers made from a ready template over its socket, the cgroups
// offered ahead for its spares, and, for a container template, the reports of how its workers
// ended. See template_manager.h for the contract.
#include <signal.h>
#include <unistd.h>

#include <fstream>
#include <future>
#include <optional>
#include <utility>

#include "agent/template/template_manager.h"
#include "agent/template/template_process.h"
#include "agent/template/template_wire.h"
#include "common/json.h"
#include "common/log.h"
#include "common/procfs.h"

namespace gantry::agent {
namespace {

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

Result<int> TemplateManager::Fork(const std::string& key, const ProcessSpec& worker) {
  auto it = templates_.find(key);
  if (it == templates_.end() || it->second->phase != Template::Phase::kReady) {
    return FailedPrecondition("no ready template for " + key);
  }
  Template& t = *it->second;
  const int64_t t0 = SystemClock().NowMs();
  bool spare = false;
  auto launch = [&](const ProcessSpec& spec, const LaunchContext& ctx) -> Result<int> {
    // A container's template cannot see them, nor can a template of a user of its own write
    // them: the runtime moves their workers.
    json::array procs;
    if (!t.container && t.joins_cgroups) {
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
    return ContainerWorker(t, answered, ctx, came_in, move_failed);
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

Result<int> TemplateManager::ContainerWorker(Template& t, int ns_pid, const LaunchContext& ctx,
                                             bool came_in, bool move_failed) {
  // The pid in the container: its number here, found among the template's children.
  std::optional<int> host = ChildByNsPid(t.init_pid, ns_pid);
  if (!host) {
    return Internal("worker pid " + std::to_string(ns_pid) +
                    " of the template's container is not a child of its init");
  }
  auto exit = std::make_shared<ExternalExit>();
  t.workers[ns_pid] = exit;
  if (ctx.external) *ctx.external = std::move(exit);
  // It waits, stopped, to be moved into its cgroups (which it cannot reach from inside), so
  // that none of its code runs outside its limits; then it is continued.
  const int64_t deadline = SystemClock().NowMs() + options_.fork_timeout_ms;
  while (ProcState(*host) != 'T' && SystemClock().NowMs() < deadline) usleep(100);
  if (!came_in) MoveInto(ctx.cgroup_procs, *host);
  if (move_failed) ReleaseSpareCgroup(t);  // the worker is not (or no longer) in it
  kill(*host, SIGCONT);
  return *host;
}

void TemplateManager::OfferSpareCgroup(Template& t) {
  if (!t.spare_cgroup.empty() || t.conn_fd < 0 || !t.joins_cgroups) return;
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

}  // namespace gantry::agent
