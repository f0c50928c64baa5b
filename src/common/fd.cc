#include "common/fd.h"

#include <fcntl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace gantry {

void Fd::Reset(int fd) {
  if (fd_ >= 0) close(fd_);
  fd_ = fd;
}

std::string ErrnoText(int err) { return strerror(err); }

Status ErrnoStatus(const std::string& what, int err) {
  std::string message = what + ": " + ErrnoText(err);
  switch (err) {
    case ENOENT:
    case ENOTDIR:
      return NotFound(std::move(message));
    case EACCES:
    case EPERM:
      return PermissionDenied(std::move(message));
    case EAGAIN:
    case ENOMEM:
    case EMFILE:
    case ENFILE:
      return ResourceExhausted(std::move(message));
    case ENOEXEC:
    case E2BIG:
    case ENAMETOOLONG:
    case ELOOP:
    case EISDIR:
      return InvalidArgument(std::move(message));
    default:
      return Internal(std::move(message));
  }
}

Status LiftFd(int raw, int min_fd, Fd* out) {
  out->Reset(raw);
  if (raw >= min_fd) return Status::Ok();
  const int lifted = fcntl(raw, F_DUPFD_CLOEXEC, min_fd);
  if (lifted < 0) return ErrnoStatus("fcntl(F_DUPFD_CLOEXEC)", errno);
  out->Reset(lifted);
  return Status::Ok();
}

Status MakeChannel(Fd* read_end, Fd* write_end, bool socket, int min_fd) {
  int fds[2];
  if ((socket ? socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) : pipe2(fds, O_CLOEXEC)) !=
      0) {
    return ErrnoStatus(socket ? "socketpair" : "pipe2", errno);
  }
  Status s = LiftFd(fds[0], min_fd, read_end);
  Status t = LiftFd(fds[1], min_fd, write_end);
  return s.ok() ? t : s;
}

}  // namespace gantry
