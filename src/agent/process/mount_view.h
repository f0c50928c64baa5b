#pragma once
// MountView: the file system of a process worker that the agent cannot give a user of its own
// (an agent that is not root; docs/security.md). Such a process starts in new user, mount, PID
// and IPC namespaces (kViewCloneFlags), its own uid and gid mapped to themselves, so that it
// keeps the agent's user but sees, of the host's files, only:
//
//   /                      a tmpfs, read-only once built
//   /usr /etc /opt /sys    the host's, read-only (those that exist; /bin, /lib... as the host's
//   /bin /sbin /lib*       symbolic links where they are links, as on a merged-/usr system)
//   /proc                  a new procfs of its PID namespace: its own processes only
//   /dev                   a tmpfs holding null, zero, full, random, urandom, tty, shm/ (a tmpfs),
//                          fd and std* links, and MountView::devices
//   /tmp                   a tmpfs of its own
//   each MountView::binds path, at its own path, read-only unless `writable`
//
// so not the agent's data directory, its database or keys, other endpoints' files, nor (its
// own PID namespace) other workers' processes, whose /proc/PID/environ the same uid could read.
// It is the init of its PID namespace: the kernel ignores the signals it has no handler for
// (SIGKILL aside), as for a container's init, and its namespace ends with it.
//
// Internal to src/agent/process: ProcessSpec::view names one; fork_exec prepares it before
// fork (PrepareView) and the child enters it between clone and exec (EnterView), with
// async-signal-safe calls only.

#include <sched.h>

#include <deque>
#include <string>
#include <vector>

#include "common/status.h"

namespace gantry::agent {

struct MountView {
  struct Bind {
    std::string path;  // absolute; bound at the same path
    bool writable = false;
  };
  // An empty directory of the agent's, on which the new root is mounted in the process's own
  // mount namespace (so one directory serves every process). Required.
  std::string root;
  std::vector<Bind> binds;
  std::vector<std::string> devices;  // more device nodes (GPUs), at their own path
};

inline constexpr int kViewCloneFlags = CLONE_NEWUSER | CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWIPC;

// Whether this process may make namespaces of `flags`: 0, or the errno of unshare() tried in a
// child (a process with threads may not make a user namespace).
int TryUnshare(int flags);

// The steps of a view, prepared before fork so that the child need not allocate. Steps point
// into `strings_`: a ViewPlan is neither copied nor moved once prepared.
class ViewPlan {
 public:
  struct Step {
    enum Kind : int { kBind, kBindFile, kDevice, kTmpfs, kProc, kSymlink } kind;
    const char* source;  // what is bound, a tmpfs's options, or a link's target
    const char* target;  // under the new root
    bool read_only;
  };

  ViewPlan() = default;
  ViewPlan(const ViewPlan&) = delete;
  ViewPlan& operator=(const ViewPlan&) = delete;

  // Prepares `view` for the agent's user. InvalidArgument for a relative or empty path, or a
  // root that is not a directory; NotFound for a bind or device that does not exist.
  Status Prepare(const MountView& view);

  // In the child, in its new namespaces: maps its uid and gid, builds the root and makes it
  // the process's. Returns 0 or an errno; *failed names the step at fault (-1: the id maps or
  // the root itself).
  int Enter(int* failed) const;

  // What step `i` (from Enter()) did, for the agent's error message.
  std::string Describe(int i) const;

 private:
  const char* Keep(std::string s) { return strings_.emplace_back(std::move(s)).c_str(); }
  void Add(Step::Kind kind, const std::string& source, const std::string& path, bool read_only);

  std::deque<std::string> strings_;
  std::vector<Step> steps_;
  const char* root_ = nullptr;
  const char* uid_map_ = nullptr;
  const char* gid_map_ = nullptr;
};

}  // namespace gantry::agent
