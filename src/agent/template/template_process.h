#pragma once
// TemplateManager::Template: one template's process, its connection and its phase. Internal to
// src/agent/template (the manager's files share it); owned by TemplateManager, which alone
// touches it, on its thread.

#include <unistd.h>

#include <cstdint>
#include <deque>
#include <future>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "agent/template/template_manager.h"
#include "common/fd.h"

namespace gantry::agent {

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
  // Whether its forks can move themselves into their cgroups: not when it runs as a user of
  // its own (a sandboxed endpoint's), which may not write the cgroups' files. The runtime
  // moves those forks instead, and no spare cgroup is offered.
  bool joins_cgroups = true;
  std::string spare_cgroup;  // offered to the template for its next spare; "" for none
  std::vector<std::string> spare_cgroup_procs;  // its cgroup.procs files
  // A container template's spare being moved into spare_cgroup by the agent (it cannot join
  // from inside): whether it is there; invalid when no move was started.
  std::shared_future<bool> spare_move;
  int spare_seq = 0;
  // A container template: `pid` is the OCI runtime's, `init_pid` the container's init (the
  // template process itself); `workers`: its workers still running, by their pid in the
  // container, with the runtime's view of their ends.
  // A template in a mount view (spec.view: an agent that is not root) is the init of a PID
  // namespace of its own as a container's is, and is treated as one (`container` is set,
  // `pid` == `init_pid`); its spec's view tells it apart in reports.
  bool container = false;
  int init_pid = 0;
  std::map<int, std::shared_ptr<ExternalExit>> workers;
  // Its network namespace (TemplateOptions::new_network), held while it lives: it starts (or
  // is restored) in it, its forks share it, and its socket listens in it (an abstract socket
  // is only reachable from its own network namespace). Invalid: the agent's.
  bool host_network = false;
  Fd netns;

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

}  // namespace gantry::agent
