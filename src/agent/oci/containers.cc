#include "agent/oci/containers.h"

#include <sys/mount.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <sstream>

#include "agent/oci/runtime_spec.h"
#include "common/log.h"
#include "common/subprocess.h"

namespace gantry::agent::oci {
namespace fs = std::filesystem;

namespace {

// The numeric id of `name` in an /etc/passwd- or /etc/group-style file (field 3), or nullopt.
std::optional<uint32_t> LookUp(const std::string& file, const std::string& name, uint32_t* gid) {
  std::ifstream in(file);
  std::string line;
  while (std::getline(in, line)) {
    std::vector<std::string> f;
    std::stringstream ss(line);
    std::string part;
    while (std::getline(ss, part, ':')) f.push_back(part);
    if (f.size() >= 4 && f[0] == name) {
      if (gid) *gid = static_cast<uint32_t>(std::stoul(f[3]));
      return static_cast<uint32_t>(std::stoul(f[2]));
    }
  }
  return std::nullopt;
}

bool Numeric(const std::string& s) {
  return !s.empty() && s.find_first_not_of("0123456789") == std::string::npos;
}

}  // namespace

Result<std::pair<uint32_t, uint32_t>> ResolveUser(const std::string& user,
                                                  const std::string& rootfs) {
  if (user.empty()) return std::pair<uint32_t, uint32_t>{0, 0};
  const size_t colon = user.find(':');
  const std::string u = user.substr(0, colon);
  const std::string g = colon == std::string::npos ? "" : user.substr(colon + 1);
  uint32_t uid = 0, gid = 0;
  if (Numeric(u)) {
    uid = static_cast<uint32_t>(std::stoul(u));
    gid = uid;
  } else {
    auto found = LookUp(rootfs + "/etc/passwd", u, &gid);
    if (!found) return NotFound("the image's user '" + u + "' is not in its /etc/passwd");
    uid = *found;
  }
  if (!g.empty()) {
    if (Numeric(g)) {
      gid = static_cast<uint32_t>(std::stoul(g));
    } else {
      auto found = LookUp(rootfs + "/etc/group", g, nullptr);
      if (!found) return NotFound("the image's group '" + g + "' is not in its /etc/group");
      gid = *found;
    }
  }
  return std::pair<uint32_t, uint32_t>{uid, gid};
}

Containers::Containers(ImageStore* images, std::string dir, ContainersOptions options)
    : images_(images), dir_(std::move(dir)), options_(std::move(options)) {}

// `ldconfig -p` of the host: read once per agent (a driver upgrade needs a restart anyway),
// since every GPU container start would otherwise run it; "" (and asked again) when it fails.
static std::string HostLibraryCache() {
  static std::mutex mu;
  static std::string cached;
  std::lock_guard<std::mutex> lock(mu);
  if (cached.empty()) {
    SubprocessOptions opts;
    opts.timeout_ms = 10'000;
    opts.max_output = 4 << 20;  // ldconfig -p lists every library
    auto ldconfig = RunProcess({"/sbin/ldconfig", "-p"}, opts);
    if (ldconfig.ok() && ldconfig->succeeded()) cached = ldconfig->output;
  }
  return cached;
}

std::vector<Mount> HostNvidiaDriverMounts() {
  return NvidiaDriverMounts(HostLibraryCache(),
                            {"/usr/bin", "/usr/local/bin", "/usr/local/nvidia/bin"});
}

Result<ProcessSpec> Containers::Prepare(const ContainerRequest& r, const ProgressFn& progress) {
  auto ref = ImageRef::Parse(r.image);
  if (!ref.ok()) return ref.status();
  Result<Image> image = images_->Ensure(*ref, r.pull, progress);
  if (!image.ok()) return image.status();

  ContainerSpec c;
  c.id = r.worker_id;
  c.args = ImageArgs(image->entrypoint, image->cmd, r.command);
  if (c.args.empty()) {
    return InvalidArgument("image " + r.image + " has no entrypoint or cmd, and the endpoint " +
                           "gives no worker.command");
  }
  for (const std::string& kv : image->env) {
    const size_t eq = kv.find('=');
    if (eq != std::string::npos && eq > 0) c.env[kv.substr(0, eq)] = kv.substr(eq + 1);
  }
  for (const auto& [k, v] : r.env) c.env[k] = v;
  if (!c.env.count("PATH")) c.env["PATH"] = kSystemPath;
  c.cwd = image->working_dir.empty() ? "/" : image->working_dir;
  auto user = ResolveUser(image->user, image->rootfs);
  if (!user.ok()) return user.status();
  c.uid = user->first;
  c.gid = user->second;
  c.read_only_rootfs = r.read_only_rootfs;
  c.cgroups_path = "/" + options_.cgroup_prefix + "/" + r.worker_id;
  c.memory_mb = r.memory_mb;
  c.devices = r.devices;
  if (!r.devices.empty()) {
    // A GPU container: the host driver's libraries and tools, as the NVIDIA toolkit does.
    for (Mount& m : HostNvidiaDriverMounts()) c.mounts.push_back(std::move(m));
  }

  const std::string bundle = BundleDir(r.worker_id);
  std::error_code ec;
  fs::remove_all(bundle, ec);
  for (const char* d : {"upper", "work", "rootfs"}) {
    fs::create_directories(bundle + "/" + d, ec);
    if (ec) return Internal("cannot make " + bundle + "/" + d + ": " + ec.message());
  }
  if (!r.volume.empty()) {
    const std::string host = dir_ + "/volumes/" + r.volume;
    fs::create_directories(host, ec);
    // Writable whatever user the image runs as (like /tmp: sticky).
    fs::permissions(host, fs::perms::all | fs::perms::sticky_bit, ec);
    c.mounts.push_back(Mount{host, r.volume_mount_path, false});
  }
  c.rootfs = bundle + "/rootfs";
  auto config = RuntimeConfig(c);
  if (!config.ok()) {
    fs::remove_all(bundle, ec);
    return config.status();
  }
  // The worker's writable layer over the image's shared, read-only rootfs.
  const std::string options =
      "lowerdir=" + image->rootfs + ",upperdir=" + bundle + "/upper,workdir=" + bundle + "/work";
  if (mount("overlay", c.rootfs.c_str(), "overlay", 0, options.c_str()) != 0) {
    const std::string why = strerror(errno);
    fs::remove_all(bundle, ec);
    return Internal("cannot mount the overlay of " + r.worker_id + ": " + why);
  }
  std::ofstream(bundle + "/config.json") << ToJson(*config);
  std::ofstream(bundle + "/image-digest") << image->digest;  // for ImagesInUse()

  ProcessSpec p;
  p.id = r.worker_id;
  p.argv =
      OciRunArgv(options_.runtime, dir_ + "/state", bundle, r.worker_id, bundle + "/runtime.log");
  p.env = {{"PATH", kSystemPath}};
  p.cpu = r.cpu;
  p.memory_mb = r.memory_mb;
  p.pids_max = c.pids_limit;  // in the worker's cgroup too: a fork in its template keeps it
  return p;
}

std::vector<std::string> Containers::Cleanup(const std::string& worker_id) {
  const std::string bundle = BundleDir(worker_id);
  std::error_code ec;
  if (!fs::exists(bundle, ec)) return {};
  std::vector<std::string> errors = OciRuntimeLogErrors(bundle + "/runtime.log");
  // The runtime's record of a container whose runtime process was killed (a clean exit removes
  // it itself). Its init may outlive it (a previous agent died, and the runtime with it, but
  // nothing killed the container): the runtime ends it, and its PID namespace with it.
  const std::string state = dir_ + "/state/" + worker_id;
  if (fs::exists(state, ec)) {
    SubprocessOptions opts;
    opts.env = {std::string("PATH=") + kSystemPath};
    opts.timeout_ms = 10'000;
    auto r = RunProcess({FindExecutable(options_.runtime), "--root", dir_ + "/state", "delete",
                         "--force", worker_id},
                        opts);
    if (r.ok() && !r->succeeded() && r->output.find("does not exist") == std::string::npos) {
      GLOG_WARN("containers: %s delete --force %s: %s", options_.runtime.c_str(), worker_id.c_str(),
                r->output.substr(0, 300).c_str());
    }
    fs::remove_all(state, ec);
  }
  if (umount2((bundle + "/rootfs").c_str(), MNT_DETACH) != 0 && errno != EINVAL &&
      errno != ENOENT) {
    GLOG_WARN("containers: cannot unmount %s: %s", (bundle + "/rootfs").c_str(), strerror(errno));
  }
  fs::remove_all(bundle, ec);
  return errors;
}

std::set<std::string> Containers::ImagesInUse() const {
  std::set<std::string> out;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(dir_, ec)) {
    std::ifstream f(e.path() / "image-digest");
    std::string digest;
    if (f && std::getline(f, digest) && !digest.empty()) out.insert(digest);
  }
  return out;
}

void Containers::CleanupAll() {
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(dir_, ec)) {
    const std::string name = e.path().filename().string();
    if (name == "state" || name == "volumes") continue;
    Cleanup(name);
  }
  fs::remove_all(dir_ + "/state", ec);
}

}  // namespace gantry::agent::oci
