// The mount view of a process worker: prepared in the agent, entered in the child. See
// mount_view.h.
#include "agent/process/mount_view.h"

#include <fcntl.h>
#include <limits.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>

namespace gantry::agent {
namespace {

namespace fs = std::filesystem;

// The host's directories every worker sees, read-only: its programs and their libraries, its
// configuration (resolv.conf, CA certificates, passwd), /sys for what reads the hardware.
constexpr const char* kSystemPaths[] = {"/usr",   "/bin",    "/sbin", "/lib", "/lib32",
                                        "/lib64", "/libx32", "/etc",  "/opt", "/sys"};
constexpr const char* kDevices[] = {"/dev/null",   "/dev/zero",    "/dev/full",
                                    "/dev/random", "/dev/urandom", "/dev/tty"};

// Child side. Async-signal-safe calls only.

int WriteText(const char* path, const char* text) {
  const int fd = open(path, O_WRONLY | O_CLOEXEC);
  if (fd < 0) return errno;
  const size_t n = strlen(text);
  const int err = write(fd, text, n) == static_cast<ssize_t>(n) ? 0 : errno;
  close(fd);
  return err;
}

// Makes every directory of `path` (its last component too if `last`), mode 0755.
int MakeDirs(const char* path, bool last) {
  char buf[PATH_MAX];
  const size_t n = strlen(path);
  if (n >= sizeof buf) return ENAMETOOLONG;
  memcpy(buf, path, n + 1);
  for (size_t i = 1; i <= n; ++i) {
    if (buf[i] != '/' && buf[i] != '\0') continue;
    if (i == n && !last) break;
    const char c = buf[i];
    buf[i] = '\0';
    if (mkdir(buf, 0755) != 0 && errno != EEXIST) return errno;
    buf[i] = c;
  }
  return 0;
}

// Adds `set` to the mount at `path` and, if `recursive`, those below it.
int Restrict(const char* path, uint64_t set, bool recursive) {
  struct mount_attr attr {};
  attr.attr_set = set;
  return mount_setattr(AT_FDCWD, path, recursive ? AT_RECURSIVE : 0, &attr, sizeof attr) == 0
             ? 0
             : errno;
}

int RunStep(const ViewPlan::Step& s) {
  using Step = ViewPlan::Step;
  const bool file = s.kind == Step::kBindFile || s.kind == Step::kDevice;
  if (int err = MakeDirs(s.target, !file && s.kind != Step::kSymlink)) return err;
  switch (s.kind) {
    case Step::kSymlink:
      return symlink(s.source, s.target) == 0 ? 0 : errno;
    case Step::kTmpfs:
      return mount("tmpfs", s.target, "tmpfs", MS_NOSUID | MS_NODEV, s.source) == 0 ? 0 : errno;
    case Step::kProc:
      return mount("proc", s.target, "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, nullptr) == 0
                 ? 0
                 : errno;
    case Step::kBind:
    case Step::kBindFile:
    case Step::kDevice:
      break;
  }
  if (file) {
    const int fd = open(s.target, O_RDONLY | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0) return errno;
    close(fd);
  }
  if (mount(s.source, s.target, nullptr, MS_BIND | MS_REC, nullptr) != 0) return errno;
  uint64_t set = MOUNT_ATTR_NOSUID;
  if (s.kind != Step::kDevice) set |= MOUNT_ATTR_NODEV;
  if (s.read_only) set |= MOUNT_ATTR_RDONLY;
  return Restrict(s.target, set, /*recursive=*/true);
}

}  // namespace

int TryUnshare(int flags) {
  const pid_t pid = fork();
  if (pid < 0) return errno;
  if (pid == 0) _exit(unshare(flags) == 0 ? 0 : errno);
  int status = 0;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  return WIFEXITED(status) ? WEXITSTATUS(status) : EPERM;
}

void ViewPlan::Add(Step::Kind kind, const std::string& source, const std::string& path,
                   bool read_only) {
  steps_.push_back({kind, Keep(source), Keep(std::string(root_) + path), read_only});
}

Status ViewPlan::Prepare(const MountView& view) {
  std::error_code ec;
  if (view.root.empty() || view.root[0] != '/' || !fs::is_directory(view.root, ec)) {
    return InvalidArgument("a mount view needs an absolute directory for its root, not '" +
                           view.root + "'");
  }
  root_ = Keep(view.root);
  const unsigned uid = geteuid(), gid = getegid();
  uid_map_ = Keep(std::to_string(uid) + " " + std::to_string(uid) + " 1\n");
  gid_map_ = Keep(std::to_string(gid) + " " + std::to_string(gid) + " 1\n");
  for (const char* path : kSystemPaths) {
    const fs::file_status st = fs::symlink_status(path, ec);
    if (fs::is_symlink(st)) {
      Add(Step::kSymlink, fs::read_symlink(path, ec).string(), path, false);
    } else if (fs::is_directory(st)) {
      Add(Step::kBind, path, path, true);
    }
  }
  // resolv.conf as a link out of /etc (systemd-resolved's): what it points into too.
  if (fs::is_symlink(fs::symlink_status("/etc/resolv.conf", ec))) {
    const fs::path target = fs::canonical("/etc/resolv.conf", ec);
    if (!ec && !target.string().starts_with("/etc/")) {
      Add(Step::kBind, target.parent_path().string(), target.parent_path().string(), true);
    }
  }
  Add(Step::kProc, "", "/proc", false);
  Add(Step::kTmpfs, "mode=0755,size=64k", "/dev", false);
  std::vector<std::string> devices(std::begin(kDevices), std::end(kDevices));
  devices.insert(devices.end(), view.devices.begin(), view.devices.end());
  for (const std::string& d : devices) {
    if (d.empty() || d[0] != '/') return InvalidArgument("bad device path '" + d + "'");
    if (!fs::exists(d, ec)) {
      if (d == "/dev/tty") continue;  // none in some sandboxes
      return NotFound("no device " + d);
    }
    Add(Step::kDevice, d, d, false);
  }
  Add(Step::kSymlink, "/proc/self/fd", "/dev/fd", false);
  Add(Step::kSymlink, "/proc/self/fd/0", "/dev/stdin", false);
  Add(Step::kSymlink, "/proc/self/fd/1", "/dev/stdout", false);
  Add(Step::kSymlink, "/proc/self/fd/2", "/dev/stderr", false);
  Add(Step::kTmpfs, "mode=1777", "/dev/shm", false);
  Add(Step::kTmpfs, "mode=1777", "/tmp", false);
  // After /tmp: a bind below it stays visible.
  for (const MountView::Bind& b : view.binds) {
    if (b.path.empty() || b.path[0] != '/') {
      return InvalidArgument("a mount view binds absolute paths, not '" + b.path + "'");
    }
    const fs::file_status st = fs::status(b.path, ec);
    if (!fs::exists(st)) return NotFound("cannot show " + b.path + " to the worker: no such path");
    Add(fs::is_directory(st) ? Step::kBind : Step::kBindFile, b.path, b.path, !b.writable);
  }
  return Status::Ok();
}

int ViewPlan::Enter(int* failed) const {
  *failed = -1;
  // Its own ids, mapped to themselves (an unprivileged process may map only those, and only
  // once it gives up setgroups()).
  if (int err = WriteText("/proc/self/setgroups", "deny")) return err;
  if (int err = WriteText("/proc/self/uid_map", uid_map_)) return err;
  if (int err = WriteText("/proc/self/gid_map", gid_map_)) return err;
  // Nothing mounted here propagates to the host.
  if (mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0) return errno;
  if (mount("tmpfs", root_, "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755") != 0) return errno;
  for (size_t i = 0; i < steps_.size(); ++i) {
    if (int err = RunStep(steps_[i])) {
      *failed = static_cast<int>(i);
      return err;
    }
  }
  // The new root becomes "/", the old one is detached (pivot_root with both at ".").
  if (chdir(root_) != 0 || syscall(SYS_pivot_root, ".", ".") != 0 ||
      umount2(".", MNT_DETACH) != 0 || chdir("/") != 0) {
    return errno;
  }
  return Restrict("/", MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV, false);
}

std::string ViewPlan::Describe(int i) const {
  if (i < 0 || static_cast<size_t>(i) >= steps_.size()) return "its user namespace or root";
  const Step& s = steps_[static_cast<size_t>(i)];
  const std::string at(s.target + strlen(root_));
  switch (s.kind) {
    case Step::kSymlink:
      return "the link " + at;
    case Step::kTmpfs:
      return "a tmpfs at " + at;
    case Step::kProc:
      return "its /proc";
    default:
      return std::string(s.source) + (s.read_only ? " (read-only)" : "");
  }
}

}  // namespace gantry::agent
