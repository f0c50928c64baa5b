#include "agent/net/netlink.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <linux/if_addr.h>
#include <linux/if_link.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <linux/veth.h>
#include <net/if.h>
#include <sched.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <cstring>
#include <thread>

namespace gantry::agent::net {
namespace {

// IFLA_BRPORT_ISOLATED (linux/if_link.h since 4.18), spelled out for older headers.
constexpr uint16_t kBridgePortIsolated = 33;

// Appends `n` bytes and pads them to netlink's 4-byte alignment.
void Append(std::string* b, const void* p, size_t n) {
  b->append(static_cast<const char*>(p), n);
  b->append(NLMSG_ALIGN(n) - n, '\0');
}

// A request of `type` with the family header `h` (ifinfomsg, ifaddrmsg, rtmsg) after its
// netlink header; Netlink::Call fills the header.
template <typename Header>
std::string Request(uint16_t type, uint16_t flags, const Header& h) {
  std::string b(NLMSG_HDRLEN, '\0');
  nlmsghdr n{};
  n.nlmsg_type = type;
  n.nlmsg_flags = NLM_F_REQUEST | NLM_F_ACK | flags;
  std::memcpy(b.data(), &n, sizeof n);
  Append(&b, &h, sizeof h);
  return b;
}

void Attr(std::string* b, uint16_t type, const void* data, size_t len) {
  rtattr a{};
  a.rta_type = type;
  a.rta_len = static_cast<uint16_t>(RTA_LENGTH(len));
  b->append(reinterpret_cast<const char*>(&a), sizeof a);
  Append(b, data, len);
}
void AttrString(std::string* b, uint16_t type, const std::string& s) {
  Attr(b, type, s.c_str(), s.size() + 1);
}
void AttrU32(std::string* b, uint16_t type, uint32_t v) { Attr(b, type, &v, sizeof v); }

// Opens a nested attribute; EndNest() closes it at the buffer's end.
size_t BeginNest(std::string* b, uint16_t type) {
  const size_t at = b->size();
  rtattr a{};
  a.rta_type = type;
  b->append(reinterpret_cast<const char*>(&a), sizeof a);
  return at;
}
void EndNest(std::string* b, size_t at) {
  const uint16_t len = static_cast<uint16_t>(b->size() - at);
  std::memcpy(b->data() + at + offsetof(rtattr, rta_len), &len, sizeof len);
}

ifinfomsg LinkHeader(int index = 0, bool up = false) {
  ifinfomsg i{};
  i.ifi_family = AF_UNSPEC;
  i.ifi_index = index;
  if (up) i.ifi_flags = i.ifi_change = IFF_UP;
  return i;
}

Result<Fd> NetlinkSocket() {
  Fd fd(socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE));
  if (fd.get() < 0) return ErrnoStatus("netlink socket", errno);
  timeval tv{5, 0};  // the kernel answers at once; never hang on it
  setsockopt(fd.get(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  return fd;
}

}  // namespace

std::string Ipv4Text(Ipv4 a) {
  return std::to_string(a >> 24) + "." + std::to_string((a >> 16) & 255) + "." +
         std::to_string((a >> 8) & 255) + "." + std::to_string(a & 255);
}

Result<Ipv4> ParseIpv4(const std::string& text) {
  in_addr a{};
  if (inet_pton(AF_INET, text.c_str(), &a) != 1) {
    return InvalidArgument("not an IPv4 address: '" + text + "'");
  }
  return ntohl(a.s_addr);
}

Result<Netlink> Netlink::Open() {
  auto fd = NetlinkSocket();
  if (!fd.ok()) return fd.status();
  return Netlink(std::move(*fd));
}

Result<Netlink> Netlink::OpenInNewNamespace(Fd* ns) {
  Status status = Status::Ok();
  Fd sock;
  std::thread([&] {
    if (unshare(CLONE_NEWNET) != 0) {
      status = ErrnoStatus("unshare(CLONE_NEWNET)", errno);
      return;
    }
    ns->Reset(open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC));
    if (ns->get() < 0) {
      status = ErrnoStatus("open /proc/thread-self/ns/net", errno);
      return;
    }
    auto fd = NetlinkSocket();
    if (fd.ok()) sock = std::move(*fd);
    status = fd.status();
  }).join();
  if (!status.ok()) return status;
  return Netlink(std::move(sock));
}

Status Netlink::Call(std::string* buf, const std::string& what, int* link_index) {
  auto* h = reinterpret_cast<nlmsghdr*>(buf->data());
  h->nlmsg_len = static_cast<uint32_t>(buf->size());
  h->nlmsg_seq = ++seq_;
  sockaddr_nl kernel{};
  kernel.nl_family = AF_NETLINK;
  if (sendto(fd_.get(), buf->data(), buf->size(), 0, reinterpret_cast<sockaddr*>(&kernel),
             sizeof kernel) < 0) {
    return ErrnoStatus(what + ": netlink send", errno);
  }
  alignas(nlmsghdr) char reply[8192];
  for (;;) {
    ssize_t n = recv(fd_.get(), reply, sizeof reply, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return ErrnoStatus(what + ": netlink receive", errno);
    int left = static_cast<int>(n);
    for (auto* m = reinterpret_cast<nlmsghdr*>(reply); NLMSG_OK(m, left); m = NLMSG_NEXT(m, left)) {
      if (m->nlmsg_seq != seq_) continue;
      if (m->nlmsg_type == RTM_NEWLINK && link_index) {
        *link_index = static_cast<const ifinfomsg*>(NLMSG_DATA(m))->ifi_index;
      }
      if (m->nlmsg_type != NLMSG_ERROR) continue;
      const int err = -static_cast<const nlmsgerr*>(NLMSG_DATA(m))->error;
      if (err == 0) return Status::Ok();
      if (err == EEXIST) return AlreadyExists(what + ": " + ErrnoText(err));
      if (err == ENODEV) return NotFound(what + ": " + ErrnoText(err));
      return ErrnoStatus(what, err);
    }
  }
}

Status Netlink::AddVeth(const std::string& host_name, int master_index,
                        const std::string& peer_name, int peer_ns) {
  std::string b = Request(RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL, LinkHeader(0, /*up=*/true));
  AttrString(&b, IFLA_IFNAME, host_name);
  if (master_index > 0) AttrU32(&b, IFLA_MASTER, static_cast<uint32_t>(master_index));
  size_t info = BeginNest(&b, IFLA_LINKINFO);
  AttrString(&b, IFLA_INFO_KIND, "veth");
  size_t data = BeginNest(&b, IFLA_INFO_DATA);
  size_t peer = BeginNest(&b, VETH_INFO_PEER);
  // Not up: the kernel would open the peer before linking it to this end (ENOTCONN).
  const ifinfomsg peer_header = LinkHeader();
  Append(&b, &peer_header, sizeof peer_header);
  AttrString(&b, IFLA_IFNAME, peer_name);
  AttrU32(&b, IFLA_NET_NS_FD, static_cast<uint32_t>(peer_ns));
  EndNest(&b, peer);
  EndNest(&b, data);
  EndNest(&b, info);
  return Call(&b, "add veth " + host_name);
}

Status Netlink::AddBridge(const std::string& name) {
  std::string b = Request(RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL, LinkHeader(0, /*up=*/true));
  AttrString(&b, IFLA_IFNAME, name);
  size_t info = BeginNest(&b, IFLA_LINKINFO);
  AttrString(&b, IFLA_INFO_KIND, "bridge");
  EndNest(&b, info);
  return Call(&b, "add bridge " + name);
}

Status Netlink::DeleteLink(const std::string& name) {
  std::string b = Request(RTM_DELLINK, 0, LinkHeader());
  AttrString(&b, IFLA_IFNAME, name);
  return Call(&b, "delete link " + name);
}

Result<int> Netlink::LinkIndex(const std::string& name) {
  std::string b = Request(RTM_GETLINK, 0, LinkHeader());
  AttrString(&b, IFLA_IFNAME, name);
  int index = 0;
  Status s = Call(&b, "link " + name, &index);
  if (!s.ok()) return s;
  if (index <= 0) return NotFound("link " + name + ": no answer");
  return index;
}

Status Netlink::SetUp(int index) {
  std::string b = Request(RTM_SETLINK, 0, LinkHeader(index, /*up=*/true));
  return Call(&b, "set link " + std::to_string(index) + " up");
}

Status Netlink::IsolatePort(int index) {
  ifinfomsg i = LinkHeader(index);
  i.ifi_family = AF_BRIDGE;
  std::string b = Request(RTM_SETLINK, 0, i);
  // Nested, flagged as such: without the flag the bridge reads an old-style port state.
  size_t info = BeginNest(&b, IFLA_PROTINFO | NLA_F_NESTED);
  const uint8_t on = 1;
  Attr(&b, kBridgePortIsolated, &on, sizeof on);
  EndNest(&b, info);
  return Call(&b, "isolate bridge port " + std::to_string(index));
}

Status Netlink::AddAddress(int index, Ipv4 address, int prefix_len) {
  ifaddrmsg a{};
  a.ifa_family = AF_INET;
  a.ifa_prefixlen = static_cast<uint8_t>(prefix_len);
  a.ifa_index = static_cast<uint32_t>(index);
  std::string b = Request(RTM_NEWADDR, NLM_F_CREATE | NLM_F_EXCL, a);
  const uint32_t net = htonl(address);
  Attr(&b, IFA_LOCAL, &net, sizeof net);
  Attr(&b, IFA_ADDRESS, &net, sizeof net);
  return Call(&b, "add address " + Ipv4Text(address));
}

Status Netlink::AddDefaultRoute(Ipv4 gateway, int index) {
  rtmsg r{};
  r.rtm_family = AF_INET;
  r.rtm_table = RT_TABLE_MAIN;
  r.rtm_protocol = RTPROT_BOOT;
  r.rtm_scope = RT_SCOPE_UNIVERSE;
  r.rtm_type = RTN_UNICAST;
  std::string b = Request(RTM_NEWROUTE, NLM_F_CREATE | NLM_F_EXCL, r);
  const uint32_t net = htonl(gateway);
  Attr(&b, RTA_GATEWAY, &net, sizeof net);
  AttrU32(&b, RTA_OIF, static_cast<uint32_t>(index));
  return Call(&b, "add default route via " + Ipv4Text(gateway));
}

}  // namespace gantry::agent::net
