#include "agent/oci/runtime_probe.h"

#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "common/json.h"
#include "common/subprocess.h"

namespace gantry::agent::oci {

namespace fs = std::filesystem;

Status MakeHostToolsRootfs(const std::string& rootfs) {
  std::error_code ec;
  for (const char* d : {"usr", "proc", "dev", "sys", "tmp", "etc"}) {
    fs::create_directories(rootfs + "/" + d, ec);
    if (ec) return Internal("cannot make " + rootfs + "/" + d + ": " + ec.message());
  }
  for (const char* l : {"bin", "lib", "lib64", "sbin"}) {
    const std::string host = std::string("/") + l;
    if (!fs::is_symlink(host, ec)) continue;
    const fs::path target = fs::read_symlink(host, ec);
    if (ec) continue;
    fs::remove(rootfs + "/" + l, ec);
    fs::create_symlink(target, rootfs + "/" + l, ec);
    if (ec) return Internal("cannot link " + rootfs + "/" + l + ": " + ec.message());
  }
  std::ofstream(rootfs + "/etc/resolv.conf");
  std::ofstream(rootfs + "/etc/hosts");
  return Status::Ok();
}

Mount HostUsrMount() { return Mount{"/usr", "/usr", true}; }

Status ProbeOciRuntime(const std::string& runtime, const std::string& dir,
                       const std::string& cgroup_prefix) {
  const std::string id = "probe-" + std::to_string(getpid());
  const std::string bundle = dir + "/bundle";
  std::error_code ec;
  fs::remove_all(dir, ec);
  GANTRY_RETURN_IF_ERROR(MakeHostToolsRootfs(bundle + "/rootfs"));
  ContainerSpec c;
  c.id = id;
  c.rootfs = bundle + "/rootfs";
  c.args = {"/usr/bin/true"};
  c.env = {{"PATH", "/usr/bin:/bin"}};
  c.cgroups_path = "/" + cgroup_prefix + "/" + id;
  c.memory_mb = 64;
  c.pids_limit = 16;
  c.mounts = {HostUsrMount()};
  auto config = RuntimeConfig(c);
  if (!config.ok()) return config.status();
  std::ofstream(bundle + "/config.json") << ToJson(*config);

  SubprocessOptions options;
  options.env = {std::string("PATH=") + kSystemPath};
  options.timeout_ms = 10'000;
  const std::string log = dir + "/runtime.log";
  auto run = RunProcess(OciRunArgv(runtime, dir + "/state", bundle, id, log), options);
  Status result = Status::Ok();
  if (!run.ok()) {
    result = run.status();
  } else if (!run->succeeded()) {
    std::string why;
    for (const std::string& e : OciRuntimeLogErrors(log)) why += (why.empty() ? "" : "; ") + e;
    if (why.empty()) why = run->output;
    while (!why.empty() && (why.back() == '\n' || why.back() == ' ')) why.pop_back();
    result = FailedPrecondition(
        runtime + " cannot run a container here (" +
        (run->timed_out ? "no exit within 10 s" : DescribeWaitStatus(run->wait_status)) + ")" +
        (why.empty() ? "" : ": " + why));
    // A runtime killed for its time leaves its state and perhaps the container: remove both.
    RunProcess({runtime, "--root", dir + "/state", "delete", "--force", id}, options).ok();
  }
  fs::remove_all(dir, ec);
  return result;
}

OciRuntimeChoice ChooseOciRuntime(const std::vector<std::string>& candidates,
                                  const OciRuntimeProbe& probe) {
  std::vector<std::string> installed;
  for (const std::string& c : candidates) {
    if (!c.empty()) installed.push_back(c);
  }
  OciRuntimeChoice choice;
  if (installed.empty()) return choice;
  if (installed.size() == 1) {
    choice.runtime = installed[0];
    return choice;
  }
  for (size_t i = 0; i < installed.size(); ++i) {
    Status st = probe(installed[i]);
    if (st.ok()) {
      choice.runtime = installed[i];
      return choice;
    }
    choice.notes.push_back(st.message());
  }
  choice.runtime = installed.back();
  return choice;
}

}  // namespace gantry::agent::oci
