#pragma once
// The OCI runtime spec (config.json) of a container worker, and the command that runs it with
// runc or crun (runtime-spec v1.0.2; runtime_probe.h picks the runtime). Pure
// functions: no process is started here.
//
// How a container worker runs: the agent's process runtime starts
//   runc --root <state dir> run --bundle <bundle dir> <worker id>      (or crun, the same way)
// as the worker's process, exactly as it starts a process worker: the same process group,
// the same cgroup (the spec's cgroupsPath is the runtime's cgroup of the worker, so runc puts
// the container in it and the runtime's OOM detection, KillAll and limits apply), the same log
// pipes (runc passes its stdio through to the container when there is no terminal), the same
// stop (runc forwards SIGTERM to the container's init). The bundle's rootfs is an overlay of the
// image's cached rootfs (read-only, shared) and a per-worker writable layer.
//
// Isolation: new PID, mount, IPC and UTS namespaces; the network namespace the OCI runtime is
// started in (the worker's own, net/worker_network.h, unless its endpoint has hostNetwork: the
// agent starts runc inside it, and the container shares it); no new privileges; Docker's default
// capability set; /proc, /dev, /sys (read-only) and the kernel paths Docker masks.

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "common/json.h"

namespace gantry::agent::oci {

struct Mount {
  std::string host_path;
  std::string container_path;
  bool read_only = false;
};

// The pids limit of every worker container, and of each worker forked inside one (in its own
// cgroup): far above what a handler needs, low enough to stop a fork bomb.
inline constexpr int64_t kContainerPidsMax = 4096;

struct ContainerSpec {
  std::string id;                 // the worker id: container id and hostname
  std::string rootfs;             // the bundle's root filesystem (absolute)
  std::vector<std::string> args;  // entrypoint + cmd, already resolved
  std::map<std::string, std::string> env;
  std::string cwd = "/";
  uint32_t uid = 0, gid = 0;      // the image's user, resolved to ids
  bool read_only_rootfs = false;  // /tmp is then a tmpfs (as Docker's --read-only --tmpfs /tmp)
  std::vector<Mount> mounts;      // volumes (e.g. a named volume at /runpod-volume)
  std::string cgroups_path;       // e.g. "/gantry/<id>": relative to each hierarchy's root
  int64_t memory_mb = 0;          // hard limit; 0: none
  int64_t pids_limit = kContainerPidsMax;  // 0: none
  uint64_t nofile = 0;                     // RLIMIT_NOFILE soft and hard; 0: the host's hard limit
  std::vector<std::string> devices;        // device nodes to pass (e.g. /dev/nvidia0)
  // A user namespace: the container's ids [0, userns_size) are the host's [userns_host, +size)
  // (its rootfs unpacked so: ImageStoreOptions::id_map_host), so that its root is nobody on the
  // host. /sys is then the host's, bound read-only (a user namespace may not mount sysfs for a
  // network namespace it does not own). 0: none; its root is the host's root.
  uint32_t userns_host = 0, userns_size = 0;
};

// config.json for `spec`. InvalidArgument when args is empty, rootfs or cwd is not absolute, or
// an env name holds '='.
Result<json::object> RuntimeConfig(const ContainerSpec& spec);

// The seccomp profile of every container (linux.seccomp): everything allowed but the system
// calls Docker's default profile refuses, unshare(), clone() with a namespace flag (EPERM) and
// clone3() (ENOSYS, so that the C library falls back to clone()).
json::object SeccompJson();

// The device nodes of a GPU container: /dev/nvidia<N> of each assigned GPU, and the driver's
// control nodes (nvidiactl, nvidia-uvm, nvidia-uvm-tools) that exist on this host. Empty for
// no GPUs.
std::vector<std::string> NvidiaDeviceNodes(const std::vector<int>& gpus);

// The host's NVIDIA driver libraries, as the NVIDIA container toolkit mounts them into a GPU
// container: the libraries of `ldconfig -p` output (`ldconfig_p`) whose names are the driver's
// (libcuda, libnvidia-*, libnvcuvid, libEGL_nvidia, libGLX_nvidia, libGLESv*_nvidia), bound
// read-only into the container's multiarch library directory (/usr/lib/x86_64-linux-gnu or
// /usr/lib/aarch64-linux-gnu), wherever the host keeps them (/usr/local/nvidia/lib64, /usr/lib64,
// ...): there the dynamic loader of a Debian or Ubuntu image finds them without an ldconfig run
// in the container. And the driver's tools (nvidia-smi, ...) found in `bin_dirs`, at /usr/bin.
// Empty on a host without the driver.
std::vector<Mount> NvidiaDriverMounts(const std::string& ldconfig_p,
                                      const std::vector<std::string>& bin_dirs);

// argv that runs the bundle in the foreground with an OCI runtime (runc or crun, which take the
// same arguments): RUNTIME --root STATE [--log LOG --log-format json] run --bundle BUNDLE ID.
// With `log`, the runtime's own messages go to that file (JSON lines) instead of its stderr
// (which is the container's); see OciRuntimeErrors().
std::vector<std::string> OciRunArgv(const std::string& runtime, const std::string& state_dir,
                                    const std::string& bundle_dir, const std::string& id,
                                    const std::string& log = "");

// The error messages of an OCI runtime's log (`--log-format json`: one {"level", "msg", "time"}
// object per line, as runc and crun both write it): the "msg" of each line at level error or
// fatal, and any line that is not such an object, leaving out runc's complaints about removing
// the cgroup the container shares with it (busy while runc is in it; the agent's runtime
// removes it).
std::vector<std::string> OciRuntimeErrors(const std::string& log_text);
// OciRuntimeErrors() of the log file at `path` (none when it cannot be read).
std::vector<std::string> OciRuntimeLogErrors(const std::string& path);

// The process args of an image, by Docker's rule: the entrypoint followed by the cmd, where
// `override_cmd` (the endpoint's worker.command), when not empty, replaces the image's cmd.
std::vector<std::string> ImageArgs(const std::vector<std::string>& entrypoint,
                                   const std::vector<std::string>& cmd,
                                   const std::vector<std::string>& override_cmd);

}  // namespace gantry::agent::oci
