#include "common/blob_store.h"

#include <fcntl.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "common/env.h"
#include "common/fd.h"

namespace gantry {

namespace fs = std::filesystem;

bool ValidDigest(const std::string& d) {
  if (d.size() != 64) return false;
  for (char c : d) {
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  }
  return true;
}

Status BlobStore::Init() {
  std::error_code ec;
  fs::create_directories(root_, ec);
  if (ec) return Unavailable("cannot create " + root_ + ": " + ec.message());
  return Status::Ok();
}

bool BlobStore::Has(const std::string& digest) const {
  std::error_code ec;
  return ValidDigest(digest) && fs::exists(PathOf(digest), ec);
}

namespace {

// Writes `data` to a new file `path` (never one already there, never through a symlink) and
// makes it durable. Removes what it wrote on any failure.
Status WriteNewFile(const std::string& path, const std::string& data) {
  Fd fd(open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644));
  if (fd.get() < 0) return ErrnoStatus("create " + path, errno);
  size_t done = 0;
  Status st = Status::Ok();
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

// Makes a rename in `dir` durable.
Status SyncDir(const std::string& dir) {
  Fd fd(open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (fd.get() < 0) return ErrnoStatus("open " + dir, errno);
  if (fsync(fd.get()) != 0) return ErrnoStatus("fsync " + dir, errno);
  return Status::Ok();
}

}  // namespace

Status BlobStore::Put(const std::string& digest, const std::string& data) {
  if (!ValidDigest(digest)) return InvalidArgument("not a SHA-256 digest: " + digest);
  if (Sha256Hex(data) != digest) {
    return InvalidArgument("the data does not match its digest " + digest);
  }
  if (Has(digest)) return Status::Ok();
  // Whole and durable before it is renamed into place: a crash leaves the blob whole or absent,
  // never a short file under its digest.
  std::string tmp = PathOf(digest) + ".tmp-" + NewId("", 8);
  if (Status st = WriteNewFile(tmp, data); !st.ok()) {
    return Unavailable("cannot write blob " + digest + ": " + st.message());
  }
  if (rename(tmp.c_str(), PathOf(digest).c_str()) != 0) {
    const int err = errno;
    unlink(tmp.c_str());
    return Unavailable("cannot store blob " + digest + ": " + ErrnoText(err));
  }
  return SyncDir(root_);
}

Result<std::string> BlobStore::Get(const std::string& digest) const {
  if (!ValidDigest(digest)) return InvalidArgument("not a SHA-256 digest: " + digest);
  std::ifstream f(PathOf(digest), std::ios::binary);
  if (!f) return NotFound("no blob " + digest);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

}  // namespace gantry
