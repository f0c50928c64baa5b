#pragma once
// Cgroups: the per-child cgroups of the local process runtime (internal to gantry_agent_process).
// A child's cgroup is <hierarchy>/<prefix>/<id> in every hierarchy in use: on cgroup v2 the
// unified one at /sys/fs/cgroup, on v1 the memory, cpu and pids ones at
// /sys/fs/cgroup/{memory,cpu,pids}.
// Paths are absolute: the agent owns the machine, so its workers' cgroups sit beside its own
// rather than inside it. The <prefix> directories are created once and left in place.
//
// Threading: not thread-safe; owned by the runtime's thread. No error here is fatal: a start
// goes on without limits when its cgroup cannot be set up.

#include <cstdint>
#include <string>
#include <vector>

#include "agent/process/process_runtime.h"
#include "common/status.h"

namespace gantry::agent {

class Cgroups {
 public:
  // Finds which controllers this host lets us use and creates their <prefix> directories.
  // use=false: none.
  Cgroups(bool use, const std::string& prefix);

  Cgroups(const Cgroups&) = delete;
  Cgroups& operator=(const Cgroups&) = delete;

  bool enabled() const { return !hierarchies_.empty(); }
  // "" when cpu, memory and pids limits are enforced; otherwise which are not, and why.
  const std::string& note() const { return note_; }
  // What is in use, for the log: e.g. "cgroup v2 (memory, cpu, pids) under /sys/fs/cgroup/gantry";
  // "" when none is.
  std::string Summary() const;

  // Creates the cgroup of `id` and writes its limits. On error nothing is left behind.
  Status Create(const std::string& id, const Limits& limits) const;
  // Writes the limits of the cgroup of `id` (as Create() does).
  Status SetLimits(const std::string& id, const Limits& limits) const;
  // Renames the cgroup of `from` to `to` (which must not exist), with its processes. Only
  // cgroup v1 can: FailedPrecondition on v2. On error nothing is renamed.
  Status Rename(const std::string& from, const std::string& to) const;
  // The cgroup.procs files of the cgroup of `id`, one per hierarchy in use.
  std::vector<std::string> ProcsFiles(const std::string& id) const;
  // Moves `pid` into the cgroup of `id`.
  Status AddProcess(const std::string& id, int pid) const;
  // Whether the kernel's OOM killer has killed a process of the cgroup of `id`.
  bool OomKilled(const std::string& id) const;
  // SIGKILLs every process still in the cgroup of `id`.
  void KillAll(const std::string& id) const;
  // Removes the empty cgroups under <prefix> made more than `older_than_s` seconds ago: those
  // left behind by an agent that was killed, or whose last process outlived it. Returns how
  // many were removed.
  int RemoveLeftovers(int64_t older_than_s) const;
  // Removes the cgroup of `id`. False while it still holds processes: call again later.
  bool Remove(const std::string& id) const;

 private:
  struct Hierarchy {
    std::string dir;  // <mount>/<prefix>
    bool memory = false;
    bool cpu = false;
    bool pids = false;
  };

  void DetectV2(const std::string& prefix, std::vector<std::string>* problems);
  void DetectV1(const std::string& prefix, std::vector<std::string>* problems);

  int version_ = 0;  // 1 or 2 once a hierarchy is in use
  std::vector<Hierarchy> hierarchies_;
  std::string note_;
};

}  // namespace gantry::agent
