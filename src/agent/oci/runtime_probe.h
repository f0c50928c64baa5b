#pragma once
// Which OCI runtime runs the container workers of this host: crun where it works here,
// else runc. crun starts containers faster, but it does not work everywhere: Debian's crun 1.8
// refuses cgroup "hybrid mode" (v1 controllers, and a cgroup2 hierarchy that holds a controller,
// such as hugetlb on this project's VMs: "cgroups in hybrid mode not supported, drop all
// controllers from cgroupv2"). Rather than guess from the cgroup layout, the agent runs one small
// container with each candidate, the way it runs workers (the same config.json generator, the
// same namespaces, a cgroup with memory and pids limits), and takes the first that works.

#include <functional>
#include <string>
#include <vector>

#include "agent/oci/runtime_spec.h"
#include "common/status.h"

namespace gantry::agent::oci {

// Makes `rootfs` (created if needed) a root filesystem for the host's own programs: mount points
// for /usr, /proc, /dev, /sys, /tmp and /etc, the host's top-level symlinks into /usr (/bin,
// /lib, /lib64, /sbin on a merged-/usr system) and empty /etc/hosts and /etc/resolv.conf. Run it
// with HostUsrMount() among the spec's mounts.
Status MakeHostToolsRootfs(const std::string& rootfs);
// The host's /usr, bound read-only at /usr.
Mount HostUsrMount();

// Runs /usr/bin/true in a container with the OCI runtime binary `runtime`, its bundle and state in
// `dir` (created; removed afterwards), in the cgroup "/<cgroup_prefix>/probe-<pid>" with a memory
// and a pids limit. Ok when it exits 0 within 10 s; otherwise FailedPrecondition quoting the
// runtime's own error messages.
Status ProbeOciRuntime(const std::string& runtime, const std::string& dir,
                       const std::string& cgroup_prefix);

using OciRuntimeProbe = std::function<Status(const std::string& runtime)>;

struct OciRuntimeChoice {
  std::string runtime;             // "" when no candidate is installed
  std::vector<std::string> notes;  // why a preferred candidate was passed over
};

// The first of `candidates` (paths in order of preference; empty ones, for runtimes that are
// not installed, are skipped) that `probe` accepts. A single installed candidate is taken
// without probing: there is nothing to fall back to, and its errors show when a worker starts.
// When every probe fails, the last candidate is taken (its errors will show the same way).
OciRuntimeChoice ChooseOciRuntime(const std::vector<std::string>& candidates,
                                  const OciRuntimeProbe& probe);

}  // namespace gantry::agent::oci
