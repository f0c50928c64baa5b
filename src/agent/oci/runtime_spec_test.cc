// The runtime spec, checked as JSON, and run for real: runc under the agent's process runtime,
// in the worker's cgroup, with a minimal root filesystem that binds the host's /usr read-only
// (Debian's merged /usr: /bin, /lib and /lib64 are links into it).

#include "agent/oci/runtime_spec.h"

#include <gtest/gtest.h>
#include <sys/mount.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <optional>
#include <thread>

#include "agent/oci/containers.h"
#include "agent/oci/runtime_probe.h"
#include "agent/process/process_runtime.h"
#include "common/subprocess.h"

namespace gantry::agent::oci {
namespace {
namespace fs = std::filesystem;

ContainerSpec Basic() {
  ContainerSpec s;
  s.id = "c1";
  s.rootfs = "/tmp/rootfs";
  s.args = {"/bin/sh", "-c", "true"};
  s.env = {{"PATH", "/usr/bin:/bin"}, {"A", "b=c"}};
  s.cgroups_path = "/gantry/c1";
  s.memory_mb = 64;
  return s;
}

TEST(RuntimeSpecTest, NamespacesLimitsAndProcess) {
  auto c = RuntimeConfig(Basic());
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  const auto& o = *c;
  EXPECT_EQ(o.at("ociVersion").as_string(), "1.0.2");
  EXPECT_EQ(o.at("hostname").as_string(), "c1");
  std::vector<std::string> ns;
  for (const auto& n : o.at("linux").at("namespaces").as_array()) {
    ns.emplace_back(n.at("type").as_string());
  }
  // Own PID, mount, IPC and UTS namespaces; the host's network.
  EXPECT_EQ(ns, (std::vector<std::string>{"pid", "mount", "ipc", "uts"}));
  const auto& res = o.at("linux").at("resources");
  EXPECT_EQ(res.at("memory").at("limit").as_int64(), 64 << 20);
  EXPECT_FALSE(
      res.as_object().contains("cpu"));  // the worker's cgroup has its share (runtime_spec.cc)
  EXPECT_EQ(res.at("pids").at("limit").as_int64(), 4096);
  EXPECT_EQ(o.at("linux").at("cgroupsPath").as_string(), "/gantry/c1");
  const auto& p = o.at("process");
  EXPECT_TRUE(p.at("noNewPrivileges").as_bool());
  const auto& env = p.at("env").as_array();
  EXPECT_NE(std::find(env.begin(), env.end(), json::value("A=b=c")), env.end());
  // RLIMIT_NOFILE never above the host's hard limit (here 20000).
  rlimit host{};
  ASSERT_EQ(getrlimit(RLIMIT_NOFILE, &host), 0);
  EXPECT_LE(p.at("rlimits").as_array()[0].at("hard").to_number<uint64_t>(), host.rlim_max);
  // Docker's capabilities less raw sockets and device nodes.
  const auto& caps = p.at("capabilities").at("bounding").as_array();
  EXPECT_EQ(std::find(caps.begin(), caps.end(), json::value("CAP_NET_RAW")), caps.end());
  EXPECT_EQ(std::find(caps.begin(), caps.end(), json::value("CAP_MKNOD")), caps.end());
  EXPECT_NE(std::find(caps.begin(), caps.end(), json::value("CAP_CHOWN")), caps.end());
  // The seccomp profile: unshare refused, clone3 ENOSYS, clone refused with CLONE_NEWUSER.
  const auto& seccomp = o.at("linux").at("seccomp");
  EXPECT_EQ(seccomp.at("defaultAction").as_string(), "SCMP_ACT_ALLOW");
  bool unshare = false, clone3 = false, newuser = false;
  for (const auto& rule : seccomp.at("syscalls").as_array()) {
    for (const auto& name : rule.at("names").as_array()) {
      unshare |= name == "unshare" && rule.at("errnoRet").as_int64() == 1;
      clone3 |= name == "clone3" && rule.at("errnoRet").as_int64() == 38;
      newuser |=
          name == "clone" && rule.at("args").as_array()[0].at("value").as_int64() == 0x10000000;
    }
  }
  EXPECT_TRUE(unshare && clone3 && newuser);
}

TEST(RuntimeSpecTest, VolumesAreMountedWithoutDevicesOrSetuid) {
  ContainerSpec spec = Basic();
  spec.mounts.push_back(Mount{"/srv/volumes/v1", "/runpod-volume", false});
  auto c = RuntimeConfig(spec);
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  const json::value* volume = nullptr;
  for (const auto& m : c->at("mounts").as_array()) {
    if (m.at("destination").as_string() == "/runpod-volume") volume = &m;
  }
  ASSERT_NE(volume, nullptr);
  EXPECT_EQ(volume->at("options"), (json::array{"rbind", "rw", "nosuid", "nodev"}));
}

TEST(RuntimeSpecTest, AUserNamespaceMapsTheContainersIdsAndBindsSys) {
  ContainerSpec spec = Basic();
  spec.userns_host = 400'000;
  spec.userns_size = 65'536;
  auto c = RuntimeConfig(spec);
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  const auto& linux_section = c->at("linux");
  EXPECT_EQ(linux_section.at("namespaces").as_array().back(), (json::object{{"type", "user"}}));
  const json::array map{json::object{{"containerID", 0}, {"hostID", 400'000}, {"size", 65'536}}};
  EXPECT_EQ(linux_section.at("uidMappings"), map);
  EXPECT_EQ(linux_section.at("gidMappings"), map);
  for (const auto& m : c->at("mounts").as_array()) {
    if (m.at("destination").as_string() == "/sys") {
      EXPECT_EQ(m.at("type").as_string(), "bind");  // sysfs needs its own network namespace
    }
  }
  EXPECT_FALSE(RuntimeConfig(Basic())->at("linux").as_object().contains("uidMappings"));
}

TEST(RuntimeSpecTest, BadSpecsRefused) {
  ContainerSpec s = Basic();
  s.args.clear();
  EXPECT_EQ(RuntimeConfig(s).status().code(), Code::kInvalidArgument);
  s = Basic();
  s.rootfs = "relative";
  EXPECT_EQ(RuntimeConfig(s).status().code(), Code::kInvalidArgument);
  s = Basic();
  s.env["A=B"] = "x";
  EXPECT_EQ(RuntimeConfig(s).status().code(), Code::kInvalidArgument);
  s = Basic();
  s.devices = {"/etc/hostname"};  // not a device
  EXPECT_EQ(RuntimeConfig(s).status().code(), Code::kInvalidArgument);
}

TEST(RuntimeSpecTest, DevicesAllowedOneByOne) {
  ContainerSpec s = Basic();
  s.devices = {"/dev/null"};
  auto c = RuntimeConfig(s);
  ASSERT_TRUE(c.ok());
  const auto& rules = c->at("linux").at("resources").at("devices").as_array();
  ASSERT_EQ(rules.size(), 2u);
  EXPECT_FALSE(rules[0].at("allow").as_bool());  // deny all, then allow each
  EXPECT_TRUE(rules[1].at("allow").as_bool());
  EXPECT_EQ(rules[1].at("major").as_int64(), 1);
  EXPECT_EQ(c->at("linux").at("devices").as_array()[0].at("path").as_string(), "/dev/null");
}

TEST(RuntimeSpecTest, NvidiaDriverLibrariesFromLdconfig) {
  const std::string ldconfig = R"(5 libs found in cache `/etc/ld.so.cache'
	libnvidia-ml.so.1 (libc6,x86-64) => /usr/lib/x86_64-linux-gnu/libnvidia-ml.so.1
	libcuda.so.1 (libc6,x86-64) => /usr/lib/x86_64-linux-gnu/libcuda.so.1
	libcuda.so.1 (libc6) => /usr/lib/i386-linux-gnu/libcuda.so.1
	libz.so.1 (libc6,x86-64) => /lib/x86_64-linux-gnu/libz.so.1
	libnvidia-ptxjitcompiler.so.1 (libc6,x86-64) => /usr/local/nvidia/lib64/libnvidia-ptxjitcompiler.so.1
)";
  auto mounts = NvidiaDriverMounts(ldconfig, {});
  ASSERT_EQ(mounts.size(), 3u);  // not the 32-bit one, not libz
  EXPECT_EQ(mounts[0].host_path, "/usr/lib/x86_64-linux-gnu/libnvidia-ml.so.1");
  EXPECT_EQ(mounts[0].container_path, mounts[0].host_path);
  EXPECT_TRUE(mounts[0].read_only);
  EXPECT_EQ(mounts[1].host_path, "/usr/lib/x86_64-linux-gnu/libcuda.so.1");
  // Wherever the host keeps it, a library lands where a Debian or Ubuntu image's loader looks.
  EXPECT_EQ(mounts[2].host_path, "/usr/local/nvidia/lib64/libnvidia-ptxjitcompiler.so.1");
  EXPECT_EQ(mounts[2].container_path, "/usr/lib/x86_64-linux-gnu/libnvidia-ptxjitcompiler.so.1");
  // This host has no driver: nothing to mount.
  EXPECT_TRUE(NvidiaDriverMounts("", {"/usr/bin"}).empty());
}

TEST(RuntimeSpecTest, NvidiaDeviceNodesAreTheAssignedGpusAndTheControlNodes) {
  EXPECT_TRUE(NvidiaDeviceNodes({}).empty());  // no GPU: not even the control nodes
  auto nodes = NvidiaDeviceNodes({0, 2});
  ASSERT_GE(nodes.size(), 2u);
  EXPECT_EQ(nodes[0], "/dev/nvidia0");
  EXPECT_EQ(nodes[1], "/dev/nvidia2");  // GPU 1 is not this worker's
  // Then the control nodes this host has (none here: no driver).
  for (size_t i = 2; i < nodes.size(); ++i) EXPECT_EQ(access(nodes[i].c_str(), F_OK), 0);
}

// A driver tool found in two bin dirs is bound once, from the first: both would land on
// /usr/bin/<tool> in the container.
TEST(RuntimeSpecTest, NvidiaToolsBoundOnceEach) {
  const std::string dir = fs::temp_directory_path() / ("gantry-tools-" + std::to_string(getpid()));
  for (const char* d : {"/a", "/b"}) {
    fs::create_directories(dir + d);
    std::ofstream(dir + d + "/nvidia-smi") << "#!/bin/sh\n";
  }
  auto mounts = NvidiaDriverMounts("", {dir + "/a", dir + "/b"});
  fs::remove_all(dir);
  ASSERT_EQ(mounts.size(), 1u);
  EXPECT_EQ(mounts[0].host_path, dir + "/a/nvidia-smi");
  EXPECT_EQ(mounts[0].container_path, "/usr/bin/nvidia-smi");
}

TEST(RuntimeSpecTest, RuntimeErrorsOfRuncAndCrunLogs) {
  // runc's JSON log: the error, without its complaints about the cgroup it shares.
  const std::string runc =
      R"LOG({"level":"error","msg":"Failed to remove cgroup","error":"rmdir busy","time":"t"}
{"level":"warning","msg":"Failed to remove cgroup (will retry)","time":"t"}
{"level":"error","msg":"runc run failed: unable to start container process: exec: \"/nope\": stat /nope: no such file or directory","time":"t"}
)LOG";
  auto errors = OciRuntimeErrors(runc);
  ASSERT_EQ(errors.size(), 1u);
  EXPECT_NE(errors[0].find("stat /nope: no such file"), std::string::npos);
  // crun's, as it wrote it on this VM; and a line that is not JSON is kept as it is.
  errors = OciRuntimeErrors(
      "{\"msg\":\"cgroups in hybrid mode not supported, drop all controllers from "
      "cgroupv2\",\"level\":\"error\",\"time\":\"t\"}\n\npanic: something\n");
  EXPECT_EQ(errors, (std::vector<std::string>{
                        "cgroups in hybrid mode not supported, drop all controllers from cgroupv2",
                        "panic: something"}));
  EXPECT_EQ(OciRunArgv("crun", "/s", "/b", "i", "/b/runtime.log"),
            (std::vector<std::string>{"crun", "--root", "/s", "--log", "/b/runtime.log",
                                      "--log-format", "json", "run", "--bundle", "/b", "i"}));
}

TEST(RuntimeProbeTest, FirstRuntimeThatRunsAContainerIsChosen) {
  std::vector<std::string> probed;
  auto probe = [&](const std::string& runtime) {
    probed.push_back(runtime);
    return runtime == "/usr/bin/crun" ? FailedPrecondition("crun cannot run a container here")
                                      : Status::Ok();
  };
  auto choice = ChooseOciRuntime({"/usr/bin/crun", "/usr/sbin/runc"}, probe);
  EXPECT_EQ(choice.runtime, "/usr/sbin/runc");
  EXPECT_EQ(choice.notes, (std::vector<std::string>{"crun cannot run a container here"}));
  EXPECT_EQ(probed, (std::vector<std::string>{"/usr/bin/crun", "/usr/sbin/runc"}));
  // A runtime that works is taken without trying the next; one installed alone is not probed.
  probed.clear();
  EXPECT_EQ(ChooseOciRuntime({"/usr/sbin/runc", "/usr/bin/crun"}, probe).runtime, "/usr/sbin/runc");
  EXPECT_EQ(probed.size(), 1u);
  probed.clear();
  EXPECT_EQ(ChooseOciRuntime({"", "/usr/bin/crun"}, probe).runtime, "/usr/bin/crun");
  EXPECT_TRUE(probed.empty());
  EXPECT_EQ(ChooseOciRuntime({"", ""}, probe).runtime, "");
  // None works: the last one, with every reason.
  auto none = ChooseOciRuntime(
      {"/a", "/b"}, [](const std::string& r) { return FailedPrecondition(r + " cannot"); });
  EXPECT_EQ(none.runtime, "/b");
  EXPECT_EQ(none.notes.size(), 2u);
}

// The real probe, with the runtimes this host has: runc runs its container (every worker test
// here depends on it); crun, where installed, either runs it too or says why not in its own
// words (on this project's VMs: cgroup hybrid mode); a binary that is no runtime is refused.
TEST(RuntimeProbeTest, RealProbeRunsAContainer) {
  const std::string dir =
      fs::temp_directory_path() / ("gantry-probe-test-" + std::to_string(getpid()));
  Status runc = ProbeOciRuntime("/usr/sbin/runc", dir, "gantry");
  EXPECT_TRUE(runc.ok()) << runc.ToString();
  EXPECT_FALSE(fs::exists(dir));
  const std::string crun = FindExecutable("crun");
  if (!crun.empty()) {
    Status st = ProbeOciRuntime(crun, dir, "gantry");
    if (!st.ok()) {
      EXPECT_EQ(st.code(), Code::kFailedPrecondition);
      EXPECT_NE(st.message().find("crun cannot run a container here ("), std::string::npos);
      EXPECT_GT(st.message().size(), std::string("crun cannot run a container here (").size() + 20)
          << st.message();
    }
    std::cout << "crun on this host: " << (st.ok() ? "runs containers" : st.message()) << "\n";
  }
  Status fake = ProbeOciRuntime("/usr/bin/false", dir, "gantry");
  EXPECT_EQ(fake.code(), Code::kFailedPrecondition) << fake.ToString();
  EXPECT_FALSE(fs::exists(dir));
}

TEST(RuntimeSpecTest, ImageArgsFollowDockersRule) {
  EXPECT_EQ(ImageArgs({"python3"}, {"app.py"}, {}),
            (std::vector<std::string>{"python3", "app.py"}));
  EXPECT_EQ(ImageArgs({"python3"}, {"app.py"}, {"other.py"}),
            (std::vector<std::string>{"python3", "other.py"}));
  EXPECT_EQ(ImageArgs({}, {"sh"}, {}), (std::vector<std::string>{"sh"}));
}

// The OCI runtime of the RuncTests: Debian's runc, or $GANTRY_RUNC (scripts/gpu_check.sh brings
// one to a GPU machine that has none).
std::string Runc() {
  const char* p = getenv("GANTRY_RUNC");
  return p && *p ? p : "/usr/sbin/runc";
}

// A root filesystem with a C library and nothing else, as an image brings its own: this host's
// dynamic loader and the libraries a driver tool links against (libc, libm, libdl, libpthread,
// librt), copied at this host's paths.
Status MakeCLibraryRootfs(const std::string& rootfs) {
  std::ifstream maps("/proc/self/maps");
  std::string line, libc, loader;
  while (std::getline(maps, line)) {
    const size_t slash = line.find('/');
    if (slash == std::string::npos) continue;
    const std::string path = line.substr(slash);
    if (path.ends_with("/libc.so.6")) libc = path;
    if (path.find("/ld-linux") != std::string::npos) loader = path;
  }
  if (libc.empty() || loader.empty()) return Internal("no libc or loader in /proc/self/maps");
  const fs::path libdir = fs::path(libc).parent_path();
  std::error_code ec;
  fs::create_directories(rootfs + libdir.string(), ec);
  fs::create_directories(rootfs + "/lib64", ec);
  for (const char* name :
       {"libc.so.6", "libm.so.6", "libdl.so.2", "libpthread.so.0", "librt.so.1"}) {
    if (fs::exists(libdir / name))
      fs::copy_file(libdir / name, rootfs + (libdir / name).string(), ec);
    if (ec) return Internal("copy " + (libdir / name).string() + ": " + ec.message());
  }
  // Where programs name it (PT_INTERP), as Debian and Ubuntu images have it.
  fs::copy_file(loader, rootfs + "/lib64/" + fs::path(loader).filename().string(), ec);
  if (ec) return Internal("copy " + loader + ": " + ec.message());
  for (const char* d : {"/usr/bin", "/proc", "/dev", "/sys", "/tmp"})
    fs::create_directories(rootfs + d, ec);
  return Status::Ok();
}

// runc for real, under the process runtime.
class RuncTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (access(Runc().c_str(), X_OK) != 0) FAIL() << Runc() << " missing: run scripts/setup.sh";
    dir_ = fs::temp_directory_path() / ("gantry-runc-test-" + std::to_string(getpid()));
    fs::remove_all(dir_);
    ASSERT_TRUE(MakeHostToolsRootfs(dir_ + "/bundle/rootfs").ok());
    runtime_ = NewLocalProcessRuntime(&clock_, {});
  }
  void TearDown() override {
    runtime_.reset();
    fs::remove_all(dir_);
  }

  // Starts `script` in a container with the given memory limit; returns its id.
  std::string Start(const std::string& script, int64_t memory_mb = 256) {
    ContainerSpec c;
    c.rootfs = dir_ + "/bundle/rootfs";
    c.args = {"/bin/sh", "-c", script};
    c.memory_mb = memory_mb;
    c.mounts = {HostUsrMount()};
    return Start(std::move(c));
  }

  // Starts the container `c` (its id, PATH and cgroup set here); returns its id.
  std::string Start(ContainerSpec c) {
    const std::string id = "t" + std::to_string(getpid()) + "-" + std::to_string(++n_);
    const int64_t memory_mb = c.memory_mb;
    c.id = id;
    c.env = {{"PATH", "/usr/bin:/bin"}};
    c.cgroups_path = "/gantry/" + id;  // the runtime's cgroup of this worker
    auto config = RuntimeConfig(c);
    EXPECT_TRUE(config.ok());
    std::ofstream(dir_ + "/bundle/config.json") << ToJson(*config);
    ProcessSpec p;
    p.id = id;
    p.argv = OciRunArgv(Runc(), dir_ + "/state", dir_ + "/bundle", id);
    p.env = {{"PATH", "/usr/sbin:/usr/bin:/sbin:/bin"}};
    p.memory_mb = memory_mb;
    auto pid = runtime_->Start(p);
    EXPECT_TRUE(pid.ok()) << pid.status().ToString();
    return id;
  }

  // Collects `id`'s stdout until it prints `line` ("" : until it ends); its exit if it ended.
  std::optional<ProcessExit> Wait(const std::string& id, std::vector<std::string>* lines,
                                  const std::string& line = "") {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
    while (std::chrono::steady_clock::now() < deadline) {
      for (const auto& l : runtime_->DrainLogs()) {
        if (l.id == id && !l.stderr_stream) lines->push_back(l.text);
      }
      if (!line.empty() && std::find(lines->begin(), lines->end(), line) != lines->end()) {
        return std::nullopt;
      }
      for (const auto& e : runtime_->Reap()) {
        if (e.id != id) continue;
        for (const auto& l : runtime_->DrainLogs()) {
          if (l.id == id && !l.stderr_stream) lines->push_back(l.text);
        }
        return e;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    ADD_FAILURE() << "container did not end";
    return std::nullopt;
  }

  std::pair<ProcessExit, std::vector<std::string>> Run(const std::string& script,
                                                       int64_t memory_mb = 256) {
    std::vector<std::string> lines;
    auto exit = Wait(Start(script, memory_mb), &lines);
    return {exit.value_or(ProcessExit{}), lines};
  }

  std::string dir_;
  int n_ = 0;
  SystemClock clock_;
  std::unique_ptr<ProcessRuntime> runtime_;
};

TEST_F(RuncTest, OwnPidNamespaceHostnameAndTheWorkersCgroup) {
  auto [exit, lines] =
      // Its cgroup: the memory hierarchy's on cgroup v1, the unified one's ("0::") on v2 alone
      // (the kernel lists "0::" last, so on hybrid hosts the memory line comes first).
      Run("echo pid=$$; ls /proc | grep -c '^[0-9]'; hostname; "
          "grep -E ':memory:|^0::' /proc/self/cgroup | head -n 1");
  EXPECT_EQ(exit.exit_code, 0);
  ASSERT_GE(lines.size(), 4u);
  EXPECT_EQ(lines[0], "pid=1");           // init of its own PID namespace
  EXPECT_LE(std::stoi(lines[1]), 3);      // sees its own processes only, not the host's
  EXPECT_EQ(lines[2].substr(0, 1), "t");  // the worker id
  EXPECT_NE(lines[3].find("/gantry/t"), std::string::npos) << lines[3];
}

// A GPU container as the agent makes one (NvidiaDeviceNodes, HostNvidiaDriverMounts), in a root
// filesystem with a C library and none of the host's /usr: nvidia-smi, bound from the host,
// lists exactly the one GPU assigned (the last one: on a host with several, the others are not
// passed), through the device nodes passed and the driver libraries bound. Needs a GPU:
// scripts/gpu_check.sh runs it with GANTRY_REQUIRE_GPU=1; elsewhere it is skipped.
TEST_F(RuncTest, GpuContainerSeesItsAssignedGpuOnly) {
  if (access("/dev/nvidia0", F_OK) != 0) {
    if (getenv("GANTRY_REQUIRE_GPU")) FAIL() << "no /dev/nvidia0 on this GPU machine";
    GTEST_SKIP() << "no NVIDIA GPU here";
  }
  int last = 0;
  while (access(("/dev/nvidia" + std::to_string(last + 1)).c_str(), F_OK) == 0) ++last;
  ContainerSpec c;
  c.rootfs = dir_ + "/gpu-rootfs";
  ASSERT_TRUE(MakeCLibraryRootfs(c.rootfs).ok());
  c.args = {"/usr/bin/nvidia-smi", "-L"};
  c.memory_mb = 512;
  c.devices = NvidiaDeviceNodes({last});
  c.mounts = HostNvidiaDriverMounts();
  for (const Mount& m : c.mounts)
    std::cout << "bound " << m.host_path << " at " << m.container_path << "\n";
  ASSERT_FALSE(c.mounts.empty()) << "no driver library in ldconfig -p";
  std::vector<std::string> lines;
  auto exit = Wait(Start(std::move(c)), &lines);
  for (const std::string& l : lines) std::cout << "container: " << l << "\n";
  ASSERT_TRUE(exit);
  EXPECT_EQ(exit->exit_code, 0);
  int gpus = 0;
  for (const std::string& l : lines) gpus += l.rfind("GPU ", 0) == 0;
  EXPECT_EQ(gpus, 1);
}

TEST_F(RuncTest, InAUserNamespaceItsRootOwnsOnlyWhatIsMappedToIt) {
  constexpr uint32_t kBase = 400'000;
  fs::create_directories(dir_ + "/vol");
  fs::create_directories(dir_ + "/bundle/rootfs/v");  // the agent's overlay root is kBase's
  ASSERT_EQ(lchown((dir_ + "/vol").c_str(), kBase, kBase), 0);
  std::ofstream(dir_ + "/vol/host-root") << "x";  // the host root's, 0644
  ContainerSpec c;
  c.rootfs = dir_ + "/bundle/rootfs";
  c.args = {"/bin/sh", "-c",
            "id -u; tr -s ' ' < /proc/self/uid_map; echo y > /v/mine && echo wrote; "
            "(echo y >> /v/host-root) 2>/dev/null && echo overwrote || echo refused; "
            "stat -c %u /v/host-root"};
  c.memory_mb = 256;
  c.mounts = {HostUsrMount(), Mount{dir_ + "/vol", "/v", false}};
  c.userns_host = kBase;
  c.userns_size = 65'536;
  std::vector<std::string> lines;
  auto exit = Wait(Start(std::move(c)), &lines);
  ASSERT_TRUE(exit);
  EXPECT_EQ(exit->exit_code, 0);
  // Root in the container, host id 400000 outside: a file of the host's root is nobody's there,
  // and not its to write; what it writes is 400000's on the host.
  EXPECT_EQ(lines, (std::vector<std::string>{"0", " 0 400000 65536", "wrote", "refused", "65534"}));
  struct stat st {};
  ASSERT_EQ(stat((dir_ + "/vol/mine").c_str(), &st), 0);
  EXPECT_EQ(st.st_uid, kBase);
}

TEST_F(RuncTest, HostFilesOutsideItsRootAreNotVisible) {
  std::ofstream(dir_ + "/secret") << "x";
  auto [exit, lines] = Run("ls " + dir_ + "/secret 2>/dev/null || echo hidden");
  EXPECT_EQ(lines, std::vector<std::string>{"hidden"});
}

TEST_F(RuncTest, OverItsMemoryLimitIsOomKilledAndReportedSo) {
  auto [exit, lines] = Run("python3 -c 'b = bytearray(300 << 20)'; echo status=$?", 64);
  // The container's python is killed by the OOM killer in the worker's cgroup.
  EXPECT_TRUE(exit.oom_killed);
  ASSERT_FALSE(lines.empty());
  EXPECT_EQ(lines.back(), "status=137");
}

TEST_F(RuncTest, StopReachesTheContainerAndKillLeavesNothing) {
  std::vector<std::string> lines;
  std::string id = Start("trap 'echo term; exit 0' TERM; echo ready; while :; do sleep 0.05; done");
  ASSERT_FALSE(Wait(id, &lines, "ready"));
  runtime_->Stop(id, 10'000);  // SIGTERM: runc forwards it to the container's init
  auto exit = Wait(id, &lines);
  ASSERT_TRUE(exit);
  EXPECT_EQ(exit->exit_code, 0);
  EXPECT_NE(std::find(lines.begin(), lines.end(), "term"), lines.end());

  lines.clear();
  id = Start("trap '' TERM; echo ready; while :; do sleep 0.05; done");
  ASSERT_FALSE(Wait(id, &lines, "ready"));
  runtime_->Stop(id, 0);  // SIGKILL: runc dies; the cgroup's processes are killed with it
  ASSERT_TRUE(Wait(id, &lines));
  // The container's processes were killed with the cgroup; once they are reaped (orphans come
  // to the runtime, a child subreaper), the cgroup is removed.
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  while (fs::exists("/sys/fs/cgroup/memory/gantry/" + id) &&
         std::chrono::steady_clock::now() < deadline) {
    runtime_->Reap();
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  EXPECT_FALSE(fs::exists("/sys/fs/cgroup/memory/gantry/" + id));
}

TEST_F(RuncTest, CleanupEndsAContainerWhoseRuntimeProcessIsGone) {
  // An agent killed with SIGKILL takes the runtime's process with it, not the container's
  // init: here runc starts it detached (-d) and exits, the same state. The next agent's
  // cleanup of that container ends it.
  const std::string id = "t" + std::to_string(getpid()) + "-left";
  ContainerSpec c;
  c.id = id;
  c.rootfs = dir_ + "/bundle/rootfs";
  c.args = {"/bin/sh", "-c", "while :; do sleep 0.05; done"};
  c.env = {{"PATH", "/usr/bin:/bin"}};
  c.mounts = {HostUsrMount()};
  auto config = RuntimeConfig(c);
  ASSERT_TRUE(config.ok());
  std::ofstream(dir_ + "/bundle/config.json") << ToJson(*config);
  const std::string run = Runc() + " --root " + dir_ + "/state run -d --bundle " + dir_ +
                          "/bundle " + id + " </dev/null >/dev/null 2>&1";
  ASSERT_EQ(std::system(run.c_str()), 0);
  std::ifstream state(dir_ + "/state/" + id + "/state.json");
  std::string text((std::istreambuf_iterator<char>(state)), std::istreambuf_iterator<char>());
  auto parsed = ParseJson(text);
  ASSERT_TRUE(parsed.ok() && parsed->is_object()) << text;
  const int init = static_cast<int>(AsInt(*Find(parsed->as_object(), "init_process_pid")).value());
  ASSERT_EQ(kill(init, 0), 0);
  fs::create_directories(dir_ + "/" + id);  // its bundle, as Prepare() makes it
  Containers(nullptr, dir_, {"/usr/sbin/runc"}).Cleanup(id);
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  while (kill(init, 0) == 0 && std::chrono::steady_clock::now() < deadline) {
    runtime_->Reap();  // it was re-parented to this process (a child subreaper)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  EXPECT_NE(kill(init, 0), 0);
  EXPECT_FALSE(fs::exists(dir_ + "/state/" + id));
  EXPECT_FALSE(fs::exists(dir_ + "/" + id));
}

TEST(ContainersTest, CleanupAllRemovesWhatAKilledAgentLeftMounted) {
  const std::string dir =
      fs::temp_directory_path() / ("gantry-containers-test-" + std::to_string(getpid()));
  fs::remove_all(dir);
  // A bundle as Prepare() makes it: an overlay mounted on <id>/rootfs, and runc's state.
  const std::string bundle = dir + "/w-left";
  const std::string lower = dir + "-lower";  // the image's rootfs, outside the containers' dir
  for (const char* d :
       {"w-left/upper", "w-left/work", "w-left/rootfs", "state/w-left", "volumes/keep"}) {
    fs::create_directories(dir + "/" + d);
  }
  fs::create_directories(lower);
  std::ofstream(lower + "/file") << "x";
  const std::string options =
      "lowerdir=" + lower + ",upperdir=" + bundle + "/upper,workdir=" + bundle + "/work";
  ASSERT_EQ(mount("overlay", (bundle + "/rootfs").c_str(), "overlay", 0, options.c_str()), 0)
      << strerror(errno);
  ASSERT_TRUE(fs::exists(bundle + "/rootfs/file"));
  Containers next(nullptr, dir);  // the agent that starts again
  next.CleanupAll();
  EXPECT_FALSE(fs::exists(bundle));  // unmounted (else removal would have failed) and removed
  EXPECT_FALSE(fs::exists(dir + "/state"));
  EXPECT_TRUE(fs::exists(dir + "/volumes/keep"));  // volumes are the users' data: kept
  EXPECT_TRUE(fs::exists(lower + "/file"));        // the shared image rootfs is untouched
  fs::remove_all(dir);
  fs::remove_all(lower);
}

}  // namespace
}  // namespace gantry::agent::oci
