#include "agent/oci/containers.h"

#include <fcntl.h>
#include <linux/openat2.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <sstream>

#include "agent/oci/runtime_spec.h"
#include "common/fd.h"
#include "common/files.h"
#include "common/log.h"
#include "common/subprocess.h"

namespace gantry::agent::oci {
namespace fs = std::filesystem;

namespace {

// At most this much of an image's /etc/passwd or /etc/group is read (a real one is a few KiB).
constexpr size_t kMaxAccountsFileBytes = 4u << 20;

// A uid or gid: decimal digits only, at most 4294967294 (4294967295 is (uid_t)-1, "no change").
std::optional<uint32_t> ParseId(std::string_view s) {
  uint64_t v = 0;
  if (s.empty() || s.size() > 10 || s.find_first_not_of("0123456789") != std::string_view::npos ||
      std::from_chars(s.data(), s.data() + s.size(), v).ec != std::errc() || v > 4294967294u) {
    return std::nullopt;
  }
  return static_cast<uint32_t>(v);
}

// `path` (absolute, as the container sees it) opened O_PATH under `root`: symlinks resolve
// inside the root, as in the container (openat2 RESOLVE_IN_ROOT). Where the kernel has no
// openat2 (before 5.6, or a seccomp filter refuses it), or with `no_openat2`, no symlink is
// followed at all: a directory symlink is an error, a final one is opened as the link itself.
// -1 with errno on failure.
int OpenInRoot(int root, const std::string& path, bool no_openat2) {
  if (!no_openat2) {
    struct open_how how = {};
    how.flags = O_PATH | O_CLOEXEC;
    how.resolve = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS;
    const int fd = static_cast<int>(syscall(SYS_openat2, root, path.c_str(), &how, sizeof how));
    if (fd >= 0 || (errno != ENOSYS && errno != EPERM)) return fd;
  }
  Fd dir(fcntl(root, F_DUPFD_CLOEXEC, 0));
  std::vector<std::string> parts;
  std::stringstream ss(path);
  for (std::string part; std::getline(ss, part, '/');) {
    if (part == "..") {  // the paths asked for have none: refused rather than resolved
      errno = EACCES;
      return -1;
    }
    if (!part.empty() && part != ".") parts.push_back(part);
  }
  for (size_t i = 0; dir.get() >= 0 && i < parts.size(); ++i) {
    const int flags = O_PATH | O_NOFOLLOW | O_CLOEXEC | (i + 1 < parts.size() ? O_DIRECTORY : 0);
    dir.Reset(openat(dir.get(), parts[i].c_str(), flags));
  }
  return dir.get() < 0 ? -1 : fcntl(dir.get(), F_DUPFD_CLOEXEC, 0);
}

// The ids of `name` in the image's `file`, an /etc/passwd- (fields 3 and 4) or, with
// `group`, an /etc/group-style file (field 3, twice). NotFound when no line names it,
// InvalidArgument when that line's ids are not ids. Lines with too few fields are skipped, as
// the C library skips them.
Result<std::pair<uint32_t, uint32_t>> LookUp(const std::string& rootfs, const std::string& file,
                                             const std::string& name, bool group) {
  const std::string what = std::string("the image's ") + (group ? "group '" : "user '") + name;
  auto text = ReadImageFile(rootfs, file, kMaxAccountsFileBytes);
  if (!text.ok()) return Status(text.status().code(), what + "': " + text.status().message());
  std::string_view rest = *text;
  for (size_t line_no = 1; !rest.empty(); ++line_no) {
    const size_t nl = rest.find('\n');
    const std::string_view line = rest.substr(0, nl);
    rest = nl == std::string_view::npos ? std::string_view() : rest.substr(nl + 1);
    std::vector<std::string_view> f;
    for (size_t at = 0;;) {
      const size_t colon = line.find(':', at);
      f.push_back(line.substr(at, colon == std::string_view::npos ? colon : colon - at));
      if (colon == std::string_view::npos) break;
      at = colon + 1;
    }
    if (f.size() < (group ? 3u : 4u) || f[0] != name) continue;
    const auto id = ParseId(f[2]);
    const auto gid = group ? id : ParseId(f[3]);
    if (!id || !gid) {
      return InvalidArgument(what + "' has ids in its " + file + ", line " +
                             std::to_string(line_no) + ", that are not numbers in [0, 4294967294]");
    }
    return std::pair<uint32_t, uint32_t>{*id, *gid};
  }
  return NotFound(what + "' is not in its " + file);
}

}  // namespace

Result<std::string> ReadImageFile(const std::string& rootfs, const std::string& path,
                                  size_t max_bytes, bool TEST_no_openat2) {
  const std::string what = "the image's " + path;
  Fd root(open(rootfs.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
  if (root.get() < 0) return ErrnoStatus("the image's root filesystem " + rootfs, errno);
  Fd at(OpenInRoot(root.get(), path, TEST_no_openat2));
  if (at.get() < 0) return ErrnoStatus(what, errno);
  struct stat st;
  if (fstat(at.get(), &st) != 0) return ErrnoStatus(what, errno);
  if (S_ISLNK(st.st_mode)) {
    return InvalidArgument(what + " is a symbolic link, and this kernel cannot resolve it " +
                           "inside the image (openat2)");
  }
  if (!S_ISREG(st.st_mode)) return InvalidArgument(what + " is not a regular file");
  if (static_cast<uint64_t>(st.st_size) > max_bytes) {
    return InvalidArgument(what + " is larger than " + std::to_string(max_bytes >> 10) + " KiB");
  }
  // Opened for reading only now that it is known to be a regular file (never a device or FIFO).
  Fd fd(open(("/proc/self/fd/" + std::to_string(at.get())).c_str(), O_RDONLY | O_CLOEXEC));
  if (fd.get() < 0) return ErrnoStatus(what, errno);
  std::string out(max_bytes + 1, '\0');
  size_t got = 0;
  while (got < out.size()) {
    const ssize_t n = read(fd.get(), out.data() + got, out.size() - got);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return ErrnoStatus(what, errno);
    if (n == 0) break;
    got += static_cast<size_t>(n);
  }
  if (got > max_bytes) {
    return InvalidArgument(what + " is larger than " + std::to_string(max_bytes >> 10) + " KiB");
  }
  out.resize(got);
  return out;
}

Result<std::pair<uint32_t, uint32_t>> ResolveUser(const std::string& user,
                                                  const std::string& rootfs) {
  if (user.empty()) return std::pair<uint32_t, uint32_t>{0, 0};
  const size_t colon = user.find(':');
  const std::string u = user.substr(0, colon);
  const std::string g = colon == std::string::npos ? "" : user.substr(colon + 1);
  std::pair<uint32_t, uint32_t> ids;
  if (u.find_first_not_of("0123456789") == std::string::npos) {
    const auto uid = ParseId(u);
    if (!uid) {
      return InvalidArgument("the image's USER '" + user +
                             "' has a uid that is not a number in [0, 4294967294]");
    }
    ids = {*uid, *uid};
  } else {
    auto found = LookUp(rootfs, "/etc/passwd", u, false);
    if (!found.ok()) return found.status();
    ids = *found;
  }
  if (g.empty()) return ids;
  if (g.find_first_not_of("0123456789") == std::string::npos) {
    const auto gid = ParseId(g);
    if (!gid) {
      return InvalidArgument("the image's USER '" + user +
                             "' has a gid that is not a number in [0, 4294967294]");
    }
    ids.second = *gid;
  } else {
    auto found = LookUp(rootfs, "/etc/group", g, true);
    if (!found.ok()) return found.status();
    ids.second = found->first;
  }
  return ids;
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

Status Containers::MakeBundle(const std::string& id, uint32_t root_id) const {
  const std::string bundle = BundleDir(id), layer = LayerDir(id);
  std::error_code ec;
  fs::remove_all(bundle, ec);
  fs::remove_all(layer, ec);
  for (const std::string& d : {bundle + "/rootfs", layer + "/upper", layer + "/work"}) {
    fs::create_directories(d, ec);
    if (ec) return Internal("cannot make " + d + ": " + ec.message());
  }
  // Traversable (a container's root in a user namespace reaches its rootfs through it), not
  // listable; its config (the worker's environment: secrets) is root's alone.
  fs::permissions(bundle, fs::perms::owner_all | fs::perms::group_exec | fs::perms::others_exec,
                  fs::perm_options::replace, ec);
  // In a user namespace the container's root is the mapped id: its writable layer's root (which
  // overlayfs shows as "/") is its, as the image's rootfs is.
  if (root_id && lchown((layer + "/upper").c_str(), root_id, root_id) != 0) {
    const std::string why = strerror(errno);
    fs::remove_all(bundle, ec);
    fs::remove_all(layer, ec);
    return Internal("cannot give " + layer + "/upper to the container's root: " + why);
  }
  return Status::Ok();
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
  c.userns_host = options_.userns_host;
  c.userns_size = options_.userns_size;
  GANTRY_RETURN_IF_ERROR(MakeBundle(r.worker_id, c.userns_host));
  const std::string layer = LayerDir(r.worker_id);
  std::error_code ec;
  if (!r.volume.empty()) {
    const std::string host = dir_ + "/volumes/" + r.volume;
    fs::create_directories(host, ec);
    // Writable whatever user the image runs as (like /tmp: sticky), and the container's root's.
    fs::permissions(host, fs::perms::all | fs::perms::sticky_bit, ec);
    if (c.userns_host) (void)lchown(host.c_str(), c.userns_host, c.userns_host);
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
      "lowerdir=" + image->rootfs + ",upperdir=" + layer + "/upper,workdir=" + layer + "/work";
  if (mount("overlay", c.rootfs.c_str(), "overlay", 0, options.c_str()) != 0) {
    const std::string why = strerror(errno);
    fs::remove_all(bundle, ec);
    return Internal("cannot mount the overlay of " + r.worker_id + ": " + why);
  }
  Status written = ReplaceFile(bundle + "/config.json", ToJson(*config), 0600);
  if (written.ok()) written = ReplaceFile(bundle + "/image-digest", image->digest, 0600);
  if (!written.ok()) {  // (image-digest: for ImagesInUse())
    umount2(c.rootfs.c_str(), MNT_DETACH);
    fs::remove_all(bundle, ec);
    return written;
  }

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
  fs::remove_all(LayerDir(worker_id), ec);
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
  // Writable layers whose bundle was gone (an agent killed between the two removals).
  if (!options_.layers_dir.empty()) {
    for (const auto& e : fs::directory_iterator(options_.layers_dir, ec)) {
      fs::remove_all(e.path(), ec);
    }
  }
}

}  // namespace gantry::agent::oci
