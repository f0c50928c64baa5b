#pragma once
// File descriptors for the modules that run processes (agent/process, agent/snapshot,
// agent/template): an owning handle, errno as a Status, and close-on-exec pipes whose ends sit
// above the descriptors a child will dup2() onto.

#include <string>
#include <utility>

#include "common/status.h"

namespace gantry {

// An owned file descriptor; -1 when empty. Closed on destruction. Not thread-safe.
class Fd {
 public:
  Fd() = default;
  explicit Fd(int fd) : fd_(fd) {}
  Fd(Fd&& o) noexcept : fd_(std::exchange(o.fd_, -1)) {}
  Fd& operator=(Fd&& o) noexcept {
    Reset(std::exchange(o.fd_, -1));
    return *this;
  }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  ~Fd() { Reset(); }
  int get() const { return fd_; }
  // Closes the one held, then holds `fd`.
  void Reset(int fd = -1);

 private:
  int fd_ = -1;
};

// strerror(err) as text.
std::string ErrnoText(int err);

// "what: <strerror>" with a code chosen by what the caller can do about it: NotFound (ENOENT,
// ENOTDIR), PermissionDenied (EACCES, EPERM), ResourceExhausted (EAGAIN, ENOMEM, EMFILE,
// ENFILE), InvalidArgument (ENOEXEC, E2BIG, ENAMETOOLONG, ELOOP, EISDIR), else Internal.
Status ErrnoStatus(const std::string& what, int err);

// Takes over `raw` and sets `out` to it, or, when raw < min_fd, to a close-on-exec duplicate
// >= min_fd (raw is then closed), so that a child's dup2() onto the low descriptors cannot
// clobber it (an agent started with stdio closed gets such low descriptors).
Status LiftFd(int raw, int min_fd, Fd* out);

// A close-on-exec pipe, or a connected pair of Unix stream sockets if `socket` (writable
// without the risk of SIGPIPE), both ends >= min_fd.
Status MakeChannel(Fd* read_end, Fd* write_end, bool socket = false, int min_fd = 3);

}  // namespace gantry
