#include "common/files.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>

#include "common/env.h"
#include "common/fd.h"

namespace gantry {

namespace fs = std::filesystem;

Status WriteNewFile(const std::string& path, const std::string& data, mode_t mode) {
  Fd fd(open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, mode));
  if (fd.get() < 0) return ErrnoStatus("create " + path, errno);
  size_t done = 0;
  Status st = Status::Ok();
  // The umask may have narrowed `mode`; a caller asking for more (a bundle file others read)
  // gets what it asked for, on the descriptor, before a byte is written.
  if (fchmod(fd.get(), mode) != 0) st = ErrnoStatus("chmod " + path, errno);
  while (st.ok() && done < data.size()) {
    ssize_t n = write(fd.get(), data.data() + done, data.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) st = ErrnoStatus("write " + path, errno);
    if (n > 0) done += static_cast<size_t>(n);
  }
  if (st.ok() && fsync(fd.get()) != 0) st = ErrnoStatus("fsync " + path, errno);
  fd.Reset();
  if (!st.ok()) unlink(path.c_str());
  return st;
}

Status SyncDir(const std::string& dir) {
  Fd fd(open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (fd.get() < 0) return ErrnoStatus("open " + dir, errno);
  if (fsync(fd.get()) != 0) return ErrnoStatus("fsync " + dir, errno);
  return Status::Ok();
}

Status ReplaceFile(const std::string& path, const std::string& data, mode_t mode) {
  const std::string tmp = path + ".tmp-" + NewId("", 8);
  GANTRY_RETURN_IF_ERROR(WriteNewFile(tmp, data, mode));
  if (rename(tmp.c_str(), path.c_str()) != 0) {
    const int err = errno;
    unlink(tmp.c_str());
    return ErrnoStatus("rename " + tmp, err);
  }
  std::string dir = fs::path(path).parent_path().string();
  return SyncDir(dir.empty() ? "." : dir);
}

Result<std::string> MakePrivateDir(const std::string& path, mode_t mode) {
  if (path.empty()) return InvalidArgument("no directory given");
  const fs::path p = fs::absolute(path);
  // Parents first, each with `mode`: nothing on the way is made readable by others.
  fs::path at;
  for (const auto& part : p) {
    at /= part;
    if (at == p) break;
    if (mkdir(at.c_str(), mode) == 0) {
      if (chmod(at.c_str(), mode) != 0) return ErrnoStatus("chmod " + at.string(), errno);
    } else if (errno != EEXIST) {
      return ErrnoStatus("mkdir " + at.string(), errno);
    }
  }
  if (mkdir(p.c_str(), mode) == 0) {
    if (chmod(p.c_str(), mode) != 0) return ErrnoStatus("chmod " + p.string(), errno);  // umask
    return std::string();
  }
  if (errno != EEXIST) return ErrnoStatus("mkdir " + p.string(), errno);
  struct stat st {};
  if (stat(p.c_str(), &st) != 0) return ErrnoStatus("stat " + p.string(), errno);
  if (!S_ISDIR(st.st_mode)) return FailedPrecondition(p.string() + " is not a directory");
  // Someone else's (a directory an operator made for us): left as it is.
  if (st.st_uid != geteuid() || (st.st_mode & 07777) == mode) return std::string();
  if (chmod(p.c_str(), mode) != 0) return ErrnoStatus("chmod " + p.string(), errno);
  char was[8];
  snprintf(was, sizeof was, "%04o", st.st_mode & 07777);
  char now[8];
  snprintf(now, sizeof now, "%04o", mode);
  return p.string() + " was " + was + ": now " + now;
}

namespace {

// Removes what `dir` (an open directory, taken over) holds; `depth` bounds the recursion.
Status EmptyDir(int dir, const std::string& path, int depth) {
  DIR* d = fdopendir(dir);
  if (!d) {
    const int err = errno;
    close(dir);
    return ErrnoStatus("open " + path, err);
  }
  Status st = Status::Ok();
  while (dirent* e = readdir(d)) {
    const std::string name = e->d_name;
    if (name == "." || name == "..") continue;
    if (unlinkat(dirfd(d), name.c_str(), 0) == 0 || errno == ENOENT) continue;
    if (errno != EISDIR && errno != EPERM) {
      st = ErrnoStatus("remove " + path + "/" + name, errno);
      continue;
    }
    // A directory (or so it was a moment ago): emptied through a descriptor of its own.
    int sub = openat(dirfd(d), name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (sub < 0) {
      if (errno != ENOENT) st = ErrnoStatus("open " + path + "/" + name, errno);
      continue;
    }
    if (depth > 256) {
      close(sub);
      st = FailedPrecondition(path + " is nested too deep to remove");
      continue;
    }
    Status inner = EmptyDir(sub, path + "/" + name, depth + 1);
    if (!inner.ok()) st = inner;
    if (unlinkat(dirfd(d), name.c_str(), AT_REMOVEDIR) != 0 && errno != ENOENT && inner.ok()) {
      st = ErrnoStatus("remove " + path + "/" + name, errno);
    }
  }
  closedir(d);
  return st;
}

}  // namespace

Status RemoveTree(const std::string& path) {
  struct stat st {};
  if (lstat(path.c_str(), &st) != 0) {
    return errno == ENOENT ? Status::Ok() : ErrnoStatus("stat " + path, errno);
  }
  if (!S_ISDIR(st.st_mode)) {
    if (unlink(path.c_str()) != 0 && errno != ENOENT) return ErrnoStatus("remove " + path, errno);
    return Status::Ok();
  }
  int dir = open(path.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  if (dir < 0) return errno == ENOENT ? Status::Ok() : ErrnoStatus("open " + path, errno);
  GANTRY_RETURN_IF_ERROR(EmptyDir(dir, path, 0));
  if (rmdir(path.c_str()) != 0 && errno != ENOENT) return ErrnoStatus("remove " + path, errno);
  return Status::Ok();
}

}  // namespace gantry
