#include "agent/process/cgroups.h"

#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <sstream>

#include "common/log.h"

namespace gantry::agent {
namespace {

constexpr char kMount[] = "/sys/fs/cgroup";

std::string Errno(const std::string& what, int err) { return what + ": " + strerror(err); }

Status WriteFile(const std::string& path, const std::string& data) {
  int fd = open(path.c_str(), O_WRONLY | O_CLOEXEC);
  if (fd < 0) return Internal(Errno("open " + path, errno));
  ssize_t n = write(fd, data.data(), data.size());
  int err = errno;
  close(fd);
  if (n != static_cast<ssize_t>(data.size())) {
    return Internal(Errno("write '" + data + "' to " + path, n < 0 ? err : EIO));
  }
  return Status::Ok();
}

Result<std::string> ReadFile(const std::string& path) {
  int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return Internal(Errno("open " + path, errno));
  std::string out;
  char buf[4096];
  ssize_t n;
  while ((n = read(fd, buf, sizeof buf)) > 0) out.append(buf, n);
  int err = errno;
  close(fd);
  if (n < 0) return Internal(Errno("read " + path, err));
  return out;
}

// Creates `path` unless it is a directory already.
Status MakeDir(const std::string& path) {
  if (mkdir(path.c_str(), 0755) == 0 || errno == EEXIST) return Status::Ok();
  return Internal(Errno("mkdir " + path, errno));
}

bool Exists(const std::string& path) { return access(path.c_str(), F_OK) == 0; }

bool HasWord(const std::string& text, const std::string& word) {
  std::istringstream in(text);
  std::string w;
  while (in >> w) {
    if (w == word) return true;
  }
  return false;
}

// The value of `key` in a "key value" per line file (memory.events, memory.oom_control); 0 if
// absent.
int64_t KeyValue(const std::string& text, const std::string& key) {
  std::istringstream in(text);
  std::string k;
  int64_t v;
  while (in >> k >> v) {
    if (k == key) return v;
  }
  return 0;
}

// Inside a container with its own cgroup namespace (Docker's default on cgroup v2), the root
// seen at /sys/fs/cgroup is the container's cgroup, and it holds the agent itself: the kernel
// turns no domain controller (memory, pids) on for the children of a cgroup that has processes
// ("no internal processes"; the hierarchy's real root, which alone has no cgroup.type, is
// exempt). As docker-in-docker does, every process of such a `root` then moves into a child of
// it, `name`. Returns how many moved (0: `root` needed no move).
Result<int> Evacuate(const std::string& root, const std::string& name) {
  if (!Exists(root + "/cgroup.type")) return 0;  // the real root
  Result<std::string> procs = ReadFile(root + "/cgroup.procs");
  if (!procs.ok()) return procs.status();
  if (procs->find_first_not_of(" \n") == std::string::npos) return 0;
  const std::string dir = root + "/" + name;
  GANTRY_RETURN_IF_ERROR(MakeDir(dir));
  std::istringstream in(*procs);
  int pid, moved = 0;
  while (in >> pid) {
    // One that ended meanwhile is skipped.
    if (WriteFile(dir + "/cgroup.procs", std::to_string(pid)).ok()) ++moved;
  }
  return moved;
}

// Turns `controller` on for the children of `dir` (cgroup v2).
Status Enable(const std::string& dir, const std::string& controller) {
  Status s = WriteFile(dir + "/cgroup.subtree_control", "+" + controller);
  if (s.ok()) return s;
  Result<std::string> on = ReadFile(dir + "/cgroup.subtree_control");
  return on.ok() && HasWord(*on, controller) ? Status::Ok() : s;
}

}  // namespace

Cgroups::Cgroups(bool use, const std::string& prefix) {
  if (!use) {
    note_ = "cgroups are disabled by options: cpu and memory limits are not enforced";
    return;
  }
  std::vector<std::string> problems;
  if (Exists(std::string(kMount) + "/cgroup.controllers")) DetectV2(prefix, &problems);
  if (!enabled()) DetectV1(prefix, &problems);

  bool memory = false, cpu = false, pids = false;
  for (const Hierarchy& h : hierarchies_) {
    memory |= h.memory;
    cpu |= h.cpu;
    pids |= h.pids;
  }
  if (memory && cpu && pids) return;
  std::vector<std::string> off;
  if (!cpu) off.push_back("cpu shares");
  if (!memory) off.push_back("memory limits");
  if (!pids) off.push_back("pids limits");
  for (size_t i = 0; i < off.size(); ++i) {
    note_ += (i == 0 ? "" : i + 1 == off.size() ? " and " : ", ") + off[i];
  }
  note_ += " are not enforced";
  for (size_t i = 0; i < problems.size(); ++i) note_ += (i ? "; " : ": ") + problems[i];
}

void Cgroups::DetectV2(const std::string& prefix, std::vector<std::string>* problems) {
  const std::string root = kMount;
  Result<std::string> available = ReadFile(root + "/cgroup.controllers");
  if (!available.ok()) {
    problems->push_back("cgroup v2: " + available.status().message());
    return;
  }
  Hierarchy h{root + "/" + prefix};
  if (Status s = MakeDir(h.dir); !s.ok()) {
    problems->push_back("cgroup v2: " + s.message());
    return;
  }
  if (Result<int> moved = Evacuate(root, prefix + "-agent"); !moved.ok()) {
    problems->push_back("cgroup v2: " + moved.status().message());
  } else if (*moved > 0) {
    GLOG_INFO(
        "process runtime: moved the %d processes of %s (the root of this cgroup namespace) "
        "into %s-agent, so that workers' cgroups can have limits",
        *moved, root.c_str(), h.dir.c_str());
  }
  for (auto [controller, on] :
       {std::pair{"memory", &Hierarchy::memory}, std::pair{"cpu", &Hierarchy::cpu},
        std::pair{"pids", &Hierarchy::pids}}) {
    Status s = HasWord(*available, controller)
                   ? Enable(root, controller)
                   : FailedPrecondition(std::string("no ") + controller + " controller in " + root);
    if (s.ok()) s = Enable(h.dir, controller);
    if (!s.ok()) {
      problems->push_back("cgroup v2: " + s.message());
      continue;
    }
    h.*on = true;
  }
  if (h.memory || h.cpu || h.pids) {
    version_ = 2;
    hierarchies_.push_back(h);
  } else {
    rmdir(h.dir.c_str());
  }
}

void Cgroups::DetectV1(const std::string& prefix, std::vector<std::string>* problems) {
  struct Candidate {
    const char* controller;
    const char* probe;  // a file only that controller's cgroups have (pids.max: not the root)
    bool Hierarchy::*on;
  };
  for (Candidate c : {Candidate{"memory", "memory.limit_in_bytes", &Hierarchy::memory},
                      Candidate{"cpu", "cpu.shares", &Hierarchy::cpu},
                      Candidate{"pids", "pids.max", &Hierarchy::pids}}) {
    const std::string mount = std::string(kMount) + "/" + c.controller;
    Hierarchy h{mount + "/" + prefix};
    if (!Exists(mount + "/cgroup.procs")) {
      problems->push_back("cgroup v1: no " + std::string(c.controller) + " hierarchy at " + mount);
      continue;
    }
    if (Status s = MakeDir(h.dir); !s.ok()) {
      problems->push_back("cgroup v1: " + s.message());
      continue;
    }
    if (!Exists(h.dir + "/" + c.probe)) {
      problems->push_back("cgroup v1: " + mount + " is not the " + c.controller + " hierarchy");
      rmdir(h.dir.c_str());
      continue;
    }
    h.*c.on = true;
    version_ = 1;
    hierarchies_.push_back(h);
  }
}

std::string Cgroups::Summary() const {
  if (hierarchies_.empty()) return "";
  std::string controllers, dirs;
  for (const Hierarchy& h : hierarchies_) {
    for (auto [on, name] :
         {std::pair{h.memory, "memory"}, std::pair{h.cpu, "cpu"}, std::pair{h.pids, "pids"}}) {
      if (on) controllers += (controllers.empty() ? "" : ", ") + std::string(name);
    }
    dirs += (dirs.empty() ? "" : ", ") + h.dir;
  }
  return "cgroup v" + std::to_string(version_) + " (" + controllers + ") under " + dirs;
}

Status Cgroups::Create(const std::string& id, const Limits& limits) const {
  Status s;
  for (const Hierarchy& h : hierarchies_) {
    const std::string dir = h.dir + "/" + id;
    if (mkdir(dir.c_str(), 0755) != 0) {
      // Left over from an earlier child of this id whose cgroup was still busy at its exit.
      if (errno != EEXIST || rmdir(dir.c_str()) != 0 || mkdir(dir.c_str(), 0755) != 0) {
        s = Internal(Errno("mkdir " + dir, errno));
        break;
      }
    }
  }
  if (s.ok()) s = SetLimits(id, limits);
  if (!s.ok()) Remove(id);
  return s;
}

Status Cgroups::SetLimits(const std::string& id, const Limits& limits) const {
  for (const Hierarchy& h : hierarchies_) {
    const std::string dir = h.dir + "/" + id;
    if (h.memory && limits.memory_mb > 0) {
      const std::string bytes = std::to_string(limits.memory_mb << 20);
      if (version_ == 1) {
        GANTRY_RETURN_IF_ERROR(WriteFile(dir + "/memory.limit_in_bytes", bytes));
        // Memory plus swap, where the kernel accounts swap; without it the limit is on RAM only.
        if (Exists(dir + "/memory.memsw.limit_in_bytes")) {
          GANTRY_RETURN_IF_ERROR(WriteFile(dir + "/memory.memsw.limit_in_bytes", bytes));
        }
      } else {
        GANTRY_RETURN_IF_ERROR(WriteFile(dir + "/memory.max", bytes));
        if (Exists(dir + "/memory.swap.max")) {
          GANTRY_RETURN_IF_ERROR(WriteFile(dir + "/memory.swap.max", "0"));
        }
      }
    }
    if (h.cpu && limits.cpu > 0) {
      // v1 shares: 1024 per core, in [2, 262144]. v2 weight: 100 (the default) per core, in
      // [1, 10000].
      GANTRY_RETURN_IF_ERROR(
          version_ == 1
              ? WriteFile(dir + "/cpu.shares", std::to_string(std::clamp<int64_t>(
                                                   std::llround(limits.cpu * 1024), 2, 262144)))
              : WriteFile(dir + "/cpu.weight", std::to_string(std::clamp<int64_t>(
                                                   std::llround(limits.cpu * 100), 1, 10000))));
    }
    // The same file on both versions.
    if (h.pids && limits.pids_max > 0) {
      GANTRY_RETURN_IF_ERROR(WriteFile(dir + "/pids.max", std::to_string(limits.pids_max)));
    }
  }
  return Status::Ok();
}

Status Cgroups::Rename(const std::string& from, const std::string& to) const {
  if (version_ != 1) return FailedPrecondition("cgroup v2 directories cannot be renamed");
  for (size_t i = 0; i < hierarchies_.size(); ++i) {
    const std::string& dir = hierarchies_[i].dir;
    if (rename((dir + "/" + from).c_str(), (dir + "/" + to).c_str()) != 0) {
      Status s = Internal(Errno("rename " + dir + "/" + from, errno));
      while (i-- > 0) {
        rename((hierarchies_[i].dir + "/" + to).c_str(),
               (hierarchies_[i].dir + "/" + from).c_str());
      }
      return s;
    }
  }
  return Status::Ok();
}

std::vector<std::string> Cgroups::ProcsFiles(const std::string& id) const {
  std::vector<std::string> out;
  for (const Hierarchy& h : hierarchies_) out.push_back(h.dir + "/" + id + "/cgroup.procs");
  return out;
}

Status Cgroups::AddProcess(const std::string& id, int pid) const {
  for (const Hierarchy& h : hierarchies_) {
    GANTRY_RETURN_IF_ERROR(WriteFile(h.dir + "/" + id + "/cgroup.procs", std::to_string(pid)));
  }
  return Status::Ok();
}

bool Cgroups::OomKilled(const std::string& id) const {
  for (const Hierarchy& h : hierarchies_) {
    if (!h.memory) continue;
    const std::string file =
        h.dir + "/" + id + (version_ == 1 ? "/memory.oom_control" : "/memory.events");
    Result<std::string> text = ReadFile(file);
    if (!text.ok()) {
      GLOG_WARN("process runtime: %s", text.status().message().c_str());
      continue;
    }
    if (KeyValue(*text, "oom_kill") > 0) return true;
  }
  return false;
}

void Cgroups::KillAll(const std::string& id) const {
  for (const Hierarchy& h : hierarchies_) {
    Result<std::string> procs = ReadFile(h.dir + "/" + id + "/cgroup.procs");
    if (!procs.ok()) continue;
    std::istringstream in(*procs);
    int pid;
    while (in >> pid) kill(pid, SIGKILL);
  }
}

int Cgroups::RemoveLeftovers(int64_t older_than_s) const {
  int removed = 0;
  const time_t cutoff = time(nullptr) - older_than_s;
  for (const Hierarchy& h : hierarchies_) {
    DIR* d = opendir(h.dir.c_str());
    if (!d) continue;
    while (dirent* e = readdir(d)) {
      if (e->d_type != DT_DIR || e->d_name[0] == '.') continue;
      const std::string dir = h.dir + "/" + e->d_name;
      struct stat st {};
      // Empty ones only: rmdir fails on a cgroup that holds processes or children.
      if (stat(dir.c_str(), &st) == 0 && st.st_mtime < cutoff && rmdir(dir.c_str()) == 0) {
        ++removed;
      }
    }
    closedir(d);
  }
  return removed;
}

bool Cgroups::Remove(const std::string& id) const {
  bool removed = true;
  for (const Hierarchy& h : hierarchies_) {
    const std::string dir = h.dir + "/" + id;
    if (rmdir(dir.c_str()) == 0 || errno == ENOENT) continue;
    if (errno == EBUSY) {
      removed = false;
    } else {
      GLOG_WARN("process runtime: %s", Errno("rmdir " + dir, errno).c_str());
    }
  }
  return removed;
}

}  // namespace gantry::agent
