#pragma once
// Reading /proc: a process's state, parent and group, as the agent's process runtime, template
// manager and snapshotter (and their tests) need them.

#include <optional>

namespace gantry {

struct ProcStat {
  char state = 0;  // 'R', 'S', 'D', 'T', 't', 'Z', ...
  int ppid = 0;
  int pgrp = 0;
};

// The state, parent and process group of `pid` from /proc/<pid>/stat; nullopt when there is no
// such process (or it cannot be read).
std::optional<ProcStat> ReadProcStat(int pid);

// ReadProcStat(pid)'s state letter; 0 when there is no such process.
char ProcState(int pid);

// The pid (in this process's PID namespace) of the child of `parent` whose pid in its own, the
// innermost, PID namespace is `ns_pid` (the last "NSpid:" of /proc/<pid>/status); e.g. a process
// forked inside a container, as its init names it. nullopt when `parent` has no such child.
std::optional<int> ChildByNsPid(int parent, int ns_pid);

}  // namespace gantry
