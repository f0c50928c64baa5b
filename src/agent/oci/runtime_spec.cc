#include "agent/oci/runtime_spec.h"

#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>

#include <fstream>
#include <set>
#include <sstream>

namespace gantry::agent::oci {
namespace {

// Docker's default capability set (moby/oci/caps/defaults.go) less CAP_NET_RAW (raw sockets:
// a container on the host's network could read its loopback traffic) and CAP_MKNOD.
const char* const kCapabilities[] = {"CAP_CHOWN",      "CAP_DAC_OVERRIDE", "CAP_FSETID",
                                     "CAP_FOWNER",     "CAP_SETGID",       "CAP_SETUID",
                                     "CAP_SETFCAP",    "CAP_SETPCAP",      "CAP_NET_BIND_SERVICE",
                                     "CAP_SYS_CHROOT", "CAP_KILL",         "CAP_AUDIT_WRITE"};

// System calls a container may not make (EPERM): those Docker's default seccomp profile refuses
// a container without extra capabilities (moby/profiles/seccomp/default.json), among them
// namespace creation, mount, ptrace, keyctl and bpf. Docker allows unshare() (a container could
// make a user namespace, where the kernel's attack surface is wide): refused here.
const char* const kDeniedSyscalls[] = {"acct",
                                       "add_key",
                                       "bpf",
                                       "clock_adjtime",
                                       "clock_settime",
                                       "create_module",
                                       "delete_module",
                                       "finit_module",
                                       "fsconfig",
                                       "fsmount",
                                       "fsopen",
                                       "fspick",
                                       "get_kernel_syms",
                                       "get_mempolicy",
                                       "init_module",
                                       "ioperm",
                                       "iopl",
                                       "kcmp",
                                       "kexec_file_load",
                                       "kexec_load",
                                       "keyctl",
                                       "lookup_dcookie",
                                       "mbind",
                                       "mount",
                                       "mount_setattr",
                                       "move_mount",
                                       "move_pages",
                                       "name_to_handle_at",
                                       "nfsservctl",
                                       "open_by_handle_at",
                                       "open_tree",
                                       "perf_event_open",
                                       "pidfd_getfd",
                                       "pivot_root",
                                       "process_vm_readv",
                                       "process_vm_writev",
                                       "ptrace",
                                       "query_module",
                                       "quotactl",
                                       "quotactl_fd",
                                       "reboot",
                                       "request_key",
                                       "set_mempolicy",
                                       "setns",
                                       "settimeofday",
                                       "stime",
                                       "swapoff",
                                       "swapon",
                                       "sysfs",
                                       "_sysctl",
                                       "umount",
                                       "umount2",
                                       "unshare",
                                       "uselib",
                                       "userfaultfd",
                                       "ustat",
                                       "vm86",
                                       "vm86old"};

// clone() flags that make namespaces: a clone with any of them is refused.
constexpr int64_t kCloneNamespaceFlags[] = {
    0x00020000,  // CLONE_NEWNS
    0x02000000,  // CLONE_NEWCGROUP
    0x04000000,  // CLONE_NEWUTS
    0x08000000,  // CLONE_NEWIPC
    0x10000000,  // CLONE_NEWUSER
    0x20000000,  // CLONE_NEWPID
    0x40000000,  // CLONE_NEWNET
};

// Kernel paths a container must not read or write (Docker's defaults).
const char* const kMaskedPaths[] = {"/proc/asound",      "/proc/acpi",          "/proc/kcore",
                                    "/proc/keys",        "/proc/latency_stats", "/proc/timer_list",
                                    "/proc/timer_stats", "/proc/sched_debug",   "/proc/scsi",
                                    "/sys/firmware"};
const char* const kReadonlyPaths[] = {"/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys",
                                      "/proc/sysrq-trigger"};

json::object MountJson(const std::string& dest, const std::string& type, const std::string& source,
                       std::initializer_list<const char*> options) {
  json::array opts;
  for (const char* o : options) opts.emplace_back(o);
  return json::object{
      {"destination", dest}, {"type", type}, {"source", source}, {"options", std::move(opts)}};
}

json::array Strings(const std::vector<std::string>& v) {
  json::array a;
  for (const auto& s : v) a.emplace_back(s);
  return a;
}

template <size_t N>
json::array Strings(const char* const (&v)[N]) {
  json::array a;
  for (const char* s : v) a.emplace_back(s);
  return a;
}

// The "process" section: `spec`'s command, user, environment and cwd, Docker's capabilities,
// RLIMIT_NOFILE. InvalidArgument for an environment variable name that is empty or holds '='.
Result<json::object> ProcessJson(const ContainerSpec& spec) {
  json::array env;
  for (const auto& [k, v] : spec.env) {
    if (k.empty() || k.find('=') != std::string::npos) {
      return InvalidArgument("container " + spec.id + ": bad environment variable name '" + k +
                             "'");
    }
    env.emplace_back(k + "=" + v);
  }
  // Stay within what the host allows: a limit above its hard limit fails the start.
  uint64_t nofile = spec.nofile;
  rlimit host{};
  if (getrlimit(RLIMIT_NOFILE, &host) == 0 && (nofile == 0 || nofile > host.rlim_max)) {
    nofile = host.rlim_max;
  }
  json::array caps = Strings(kCapabilities);
  return json::object{
      {"terminal", false},
      {"user", json::object{{"uid", spec.uid}, {"gid", spec.gid}}},
      {"args", Strings(spec.args)},
      {"env", std::move(env)},
      {"cwd", spec.cwd},
      {"capabilities", json::object{{"bounding", caps}, {"effective", caps}, {"permitted", caps}}},
      {"rlimits",
       json::array{json::object{{"type", "RLIMIT_NOFILE"}, {"hard", nofile}, {"soft", nofile}}}},
      {"noNewPrivileges", true}};
}

// The "mounts" section: Docker's kernel file systems, the host's name resolution, a tmpfs /tmp
// for a read-only rootfs, and `spec`'s volumes.
json::array MountsJson(const ContainerSpec& spec) {
  json::array mounts{
      MountJson("/proc", "proc", "proc", {"nosuid", "noexec", "nodev"}),
      MountJson("/dev", "tmpfs", "tmpfs", {"nosuid", "strictatime", "mode=755", "size=65536k"}),
      MountJson("/dev/pts", "devpts", "devpts",
                {"nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"}),
      MountJson("/dev/shm", "tmpfs", "shm",
                {"nosuid", "noexec", "nodev", "mode=1777", "size=65536k"}),
      MountJson("/dev/mqueue", "mqueue", "mqueue", {"nosuid", "noexec", "nodev"}),
      spec.userns_host
          ? MountJson("/sys", "bind", "/sys", {"rbind", "nosuid", "noexec", "nodev", "ro"})
          : MountJson("/sys", "sysfs", "sysfs", {"nosuid", "noexec", "nodev", "ro"}),
      MountJson("/sys/fs/cgroup", "cgroup", "cgroup",
                {"nosuid", "noexec", "nodev", "relatime", "ro"}),
  };
  // Name resolution and the host's name, as Docker gives them (the host's resolver must not be
  // on loopback, which a worker's own network namespace does not share).
  for (const char* f : {"/etc/resolv.conf", "/etc/hosts"}) {
    mounts.push_back(MountJson(f, "bind", f, {"rbind", "ro"}));
  }
  if (spec.read_only_rootfs) {
    // Programs expect a writable /tmp (Python's tempfile does at start-up).
    mounts.push_back(
        MountJson("/tmp", "tmpfs", "tmpfs", {"nosuid", "nodev", "mode=1777", "size=65536k"}));
  }
  for (const Mount& m : spec.mounts) {
    // No device nodes and no setuid programs through a volume, whoever wrote them there.
    json::array opts{"rbind", m.read_only ? "ro" : "rw", "nosuid", "nodev"};
    mounts.push_back(json::object{{"destination", m.container_path},
                                  {"type", "bind"},
                                  {"source", m.host_path},
                                  {"options", std::move(opts)}});
  }
  return mounts;
}

// The "linux" section: the namespaces, `spec`'s memory and pids limits, its device nodes (every
// other device denied), Docker's masked and read-only paths, the cgroup. InvalidArgument for a
// device that is not a character device.
Result<json::object> LinuxJson(const ContainerSpec& spec) {
  json::object resources;
  if (spec.memory_mb > 0) {
    const int64_t bytes = spec.memory_mb << 20;
    resources["memory"] = json::object{{"limit", bytes}, {"swap", bytes}};
  }
  // No cpu section: the worker's cgroup (cgroupsPath, made by the process runtime before the
  // OCI runtime runs) carries its CPU share, written as for process and forked workers. runc's
  // and crun's own mapping of shares to cgroup v2's weight would give 1.5 cores a weight of 59,
  // less than an unlimited process's 100 (seen in tests/vm).
  if (spec.pids_limit > 0) resources["pids"] = json::object{{"limit", spec.pids_limit}};
  // Devices: runc's defaults (null, zero, full, random, urandom, tty, ptmx) and the ones given
  // (the assigned GPUs); every other device is denied.
  json::array devices;
  json::array device_rules{json::object{{"allow", false}, {"access", "rwm"}}};
  for (const std::string& d : spec.devices) {
    struct stat st {};
    if (stat(d.c_str(), &st) != 0 || !S_ISCHR(st.st_mode)) {
      return InvalidArgument("container " + spec.id + ": " + d + " is not a character device");
    }
    const int64_t major = major(st.st_rdev), minor = minor(st.st_rdev);
    devices.push_back(json::object{{"path", d},
                                   {"type", "c"},
                                   {"major", major},
                                   {"minor", minor},
                                   {"fileMode", st.st_mode & 0777},
                                   {"uid", 0},
                                   {"gid", 0}});
    device_rules.push_back(json::object{
        {"allow", true}, {"type", "c"}, {"major", major}, {"minor", minor}, {"access", "rwm"}});
  }
  resources["devices"] = std::move(device_rules);

  json::object linux_section{
      {"namespaces", json::array{json::object{{"type", "pid"}}, json::object{{"type", "mount"}},
                                 json::object{{"type", "ipc"}}, json::object{{"type", "uts"}}}},
      {"resources", std::move(resources)},
      {"maskedPaths", Strings(kMaskedPaths)},
      {"readonlyPaths", Strings(kReadonlyPaths)},
      {"seccomp", SeccompJson()}};
  if (spec.userns_host) {
    linux_section["namespaces"].as_array().push_back(json::object{{"type", "user"}});
    const json::array map{json::object{{"containerID", 0},
                                       {"hostID", static_cast<int64_t>(spec.userns_host)},
                                       {"size", static_cast<int64_t>(spec.userns_size)}}};
    linux_section["uidMappings"] = map;
    linux_section["gidMappings"] = map;
  }
  if (!spec.cgroups_path.empty()) linux_section["cgroupsPath"] = spec.cgroups_path;
  if (!devices.empty()) linux_section["devices"] = std::move(devices);
  return linux_section;
}

}  // namespace

json::object SeccompJson() {
  constexpr int64_t kEperm = 1, kEnosys = 38;
  json::array syscalls{
      json::object{
          {"names", Strings(kDeniedSyscalls)}, {"action", "SCMP_ACT_ERRNO"}, {"errnoRet", kEperm}},
      // clone3 passes its flags in memory a filter cannot read: ENOSYS makes
      // the C library fall back to clone(), whose flags it can.
      json::object{
          {"names", json::array{"clone3"}}, {"action", "SCMP_ACT_ERRNO"}, {"errnoRet", kEnosys}}};
  for (int64_t flag : kCloneNamespaceFlags) {
    syscalls.push_back(json::object{
        {"names", json::array{"clone"}},
        {"action", "SCMP_ACT_ERRNO"},
        {"errnoRet", kEperm},
        {"args",
         json::array{json::object{
             {"index", 0}, {"value", flag}, {"valueTwo", flag}, {"op", "SCMP_CMP_MASKED_EQ"}}}}});
  }
  return json::object{{"defaultAction", "SCMP_ACT_ALLOW"},
                      {"architectures", json::array{"SCMP_ARCH_X86_64", "SCMP_ARCH_X86",
                                                    "SCMP_ARCH_X32", "SCMP_ARCH_AARCH64"}},
                      {"syscalls", std::move(syscalls)}};
}

Result<json::object> RuntimeConfig(const ContainerSpec& spec) {
  if (spec.args.empty()) return InvalidArgument("container " + spec.id + ": no command to run");
  if (spec.rootfs.empty() || spec.rootfs[0] != '/') {
    return InvalidArgument("container " + spec.id + ": rootfs must be an absolute path");
  }
  if (spec.cwd.empty() || spec.cwd[0] != '/') {
    return InvalidArgument("container " + spec.id + ": working directory must be absolute");
  }
  Result<json::object> process = ProcessJson(spec);
  if (!process.ok()) return process.status();
  json::array mounts = MountsJson(spec);
  Result<json::object> linux_section = LinuxJson(spec);
  if (!linux_section.ok()) return linux_section.status();
  return json::object{
      {"ociVersion", "1.0.2"},
      {"process", std::move(*process)},
      {"root", json::object{{"path", spec.rootfs}, {"readonly", spec.read_only_rootfs}}},
      {"hostname", spec.id},
      {"mounts", std::move(mounts)},
      {"linux", std::move(*linux_section)}};
}

std::vector<std::string> NvidiaDeviceNodes(const std::vector<int>& gpus) {
  std::vector<std::string> out;
  if (gpus.empty()) return out;
  for (int g : gpus) out.push_back("/dev/nvidia" + std::to_string(g));
  for (const char* d : {"/dev/nvidiactl", "/dev/nvidia-uvm", "/dev/nvidia-uvm-tools"}) {
    if (access(d, F_OK) == 0) out.push_back(d);
  }
  return out;
}

std::vector<Mount> NvidiaDriverMounts(const std::string& ldconfig_p,
                                      const std::vector<std::string>& bin_dirs) {
  static const char* const kLibPrefixes[] = {"libcuda.so",         "libnvidia-",
                                             "libnvcuvid.so",      "libEGL_nvidia.so",
                                             "libGLX_nvidia.so",   "libGLESv1_CM_nvidia.so",
                                             "libGLESv2_nvidia.so"};
  std::vector<Mount> out;
  std::set<std::string> seen;
  std::istringstream in(ldconfig_p);
  std::string line;
  while (std::getline(in, line)) {
    // "\tlibcuda.so.1 (libc6,x86-64) => /usr/lib/x86_64-linux-gnu/libcuda.so.1"
    const size_t arrow = line.find(" => ");
    if (arrow == std::string::npos) continue;
    const size_t start = line.find_first_not_of(" \t");
    const std::string name = line.substr(start, line.find(' ', start) - start);
    const std::string path = line.substr(arrow + 4);
    if (line.find("x86-64") == std::string::npos && line.find("AArch64") == std::string::npos) {
      continue;  // 32-bit compat libraries: not for the container's 64-bit processes
    }
    bool driver = false;
    for (const char* p : kLibPrefixes) driver = driver || name.rfind(p, 0) == 0;
    const std::string dir = line.find("x86-64") != std::string::npos ? "/usr/lib/x86_64-linux-gnu"
                                                                     : "/usr/lib/aarch64-linux-gnu";
    const std::string in_container = dir + path.substr(path.rfind('/'));
    if (driver && path.size() > 1 && path[0] == '/' && seen.insert(in_container).second) {
      out.push_back(Mount{path, in_container, true});
    }
  }
  for (const std::string& dir : bin_dirs) {
    for (const char* tool : {"nvidia-smi", "nvidia-debugdump", "nvidia-persistenced",
                             "nvidia-cuda-mps-control", "nvidia-cuda-mps-server"}) {
      const std::string path = dir + "/" + tool;
      struct stat st {};
      // Keyed by where it lands: the first of bin_dirs that has the tool wins.
      const std::string in_container = "/usr/bin/" + std::string(tool);
      if (stat(path.c_str(), &st) == 0 && seen.insert(in_container).second) {
        out.push_back(Mount{path, in_container, true});
      }
    }
  }
  return out;
}

std::vector<std::string> OciRunArgv(const std::string& runtime, const std::string& state_dir,
                                    const std::string& bundle_dir, const std::string& id,
                                    const std::string& log) {
  std::vector<std::string> argv = {runtime, "--root", state_dir};
  if (!log.empty()) argv.insert(argv.end(), {"--log", log, "--log-format", "json"});
  argv.insert(argv.end(), {"run", "--bundle", bundle_dir, id});
  return argv;
}

std::vector<std::string> OciRuntimeErrors(const std::string& log_text) {
  std::vector<std::string> out;
  std::istringstream in(log_text);
  std::string line;
  while (std::getline(in, line)) {
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    std::string msg = line;
    if (auto v = ParseJson(line); v.ok() && v->is_object()) {
      const json::object& o = v->as_object();
      const json::value* level = o.if_contains("level");
      const json::value* text = o.if_contains("msg");
      if (!level || !level->is_string() || !text || !text->is_string()) continue;
      if (level->get_string() != "error" && level->get_string() != "fatal") continue;
      msg = std::string(text->get_string());
    }
    if (msg.find("remove cgroup") != std::string::npos ||
        msg.find("remove paths") != std::string::npos) {
      continue;
    }
    out.push_back(msg);
  }
  return out;
}

std::vector<std::string> OciRuntimeLogErrors(const std::string& path) {
  std::stringstream text;
  text << std::ifstream(path).rdbuf();
  return OciRuntimeErrors(text.str());
}

std::vector<std::string> ImageArgs(const std::vector<std::string>& entrypoint,
                                   const std::vector<std::string>& cmd,
                                   const std::vector<std::string>& override_cmd) {
  std::vector<std::string> args = entrypoint;
  const auto& tail = override_cmd.empty() ? cmd : override_cmd;
  args.insert(args.end(), tail.begin(), tail.end());
  return args;
}

}  // namespace gantry::agent::oci
