// Lines and descriptors over a template's socket. See template_wire.h for the contract.
#include "agent/template/template_wire.h"

#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "common/env.h"

namespace gantry::agent {
namespace {

std::string Errno(const std::string& what) { return what + ": " + strerror(errno); }

}  // namespace

Status SendWithFds(int sock, const std::string& text, const std::vector<int>& fds) {
  iovec iov{const_cast<char*>(text.data()), text.size()};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  std::vector<char> control(CMSG_SPACE(sizeof(int) * fds.size()));
  if (!fds.empty()) {
    msg.msg_control = control.data();
    msg.msg_controllen = control.size();
    cmsghdr* c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int) * fds.size());
    memcpy(CMSG_DATA(c), fds.data(), sizeof(int) * fds.size());
  }
  ssize_t n;
  while ((n = sendmsg(sock, &msg, MSG_NOSIGNAL)) < 0 && errno == EINTR) {
  }
  if (n < 0) return Unavailable(Errno("sending to the template"));
  // The rest, if the socket took only part of it (no fds go with it).
  for (size_t sent = n; sent < text.size();) {
    n = send(sock, text.data() + sent, text.size() - sent, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return Unavailable(Errno("sending to the template"));
    sent += n;
  }
  return Status::Ok();
}

Result<std::string> ReadLine(int sock, std::string* buffer, int64_t timeout_ms) {
  const int64_t deadline = SystemClock().NowMs() + timeout_ms;
  for (;;) {
    if (size_t nl = buffer->find('\n'); nl != std::string::npos) {
      std::string line = buffer->substr(0, nl);
      buffer->erase(0, nl + 1);
      return line;
    }
    const int64_t left = std::max<int64_t>(deadline - SystemClock().NowMs(), 0);
    pollfd p{sock, POLLIN, 0};
    int r = poll(&p, 1, static_cast<int>(left));
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) return Internal(Errno("poll"));
    if (r == 0) {
      if (left == 0) return DeadlineExceeded("no answer from the template");
      continue;
    }
    char buf[4096];
    ssize_t n = read(sock, buf, sizeof buf);
    if (n < 0 && (errno == EINTR || errno == EAGAIN)) continue;
    if (n < 0) return Unavailable(Errno("reading from the template"));
    if (n == 0) return Unavailable("the template closed the connection");
    buffer->append(buf, n);
    if (buffer->size() > (1 << 20)) return Internal("the template's answer is too long");
  }
}

}  // namespace gantry::agent
