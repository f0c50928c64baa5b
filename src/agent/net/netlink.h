#pragma once
// A minimal rtnetlink (NETLINK_ROUTE) client: the few requests the worker network makes to set up
// a worker's network namespace (a veth pair, addresses, a default route) without running `ip`
// (nine `ip` calls cost ~26 ms; these requests cost well under one). Internal to src/agent/net.
//
// Threading: a Netlink is used by one thread at a time. Open() may be called from any thread.

#include <cstdint>
#include <string>

#include "common/fd.h"
#include "common/status.h"

namespace gantry::agent::net {

// An IPv4 address in host byte order, and its dotted text.
using Ipv4 = uint32_t;
std::string Ipv4Text(Ipv4 a);
// "10.1.2.3" → its address; nullopt-like InvalidArgument for anything else.
Result<Ipv4> ParseIpv4(const std::string& text);

class Netlink {
 public:
  // A socket in the calling thread's network namespace.
  static Result<Netlink> Open();
  // A new network namespace (its descriptor in *ns, close-on-exec) and a socket inside it. The
  // namespace is made on a short-lived thread, so the caller's threads stay where they are.
  static Result<Netlink> OpenInNewNamespace(Fd* ns);

  // A veth pair: `host_name` here, attached to the bridge `master_index` (0: none), and its peer
  // `peer_name` in the network namespace `peer_ns` (down: SetUp() it there). AlreadyExists if
  // `host_name` exists.
  Status AddVeth(const std::string& host_name, int master_index, const std::string& peer_name,
                 int peer_ns);
  // A bridge named `name`, up.
  Status AddBridge(const std::string& name);
  // Deletes the link `name`. NotFound if there is none.
  Status DeleteLink(const std::string& name);
  // The index of the link `name`; NotFound if there is none.
  Result<int> LinkIndex(const std::string& name);
  Status SetUp(int index);
  // Makes the bridge port `index` isolated: isolated ports cannot reach each other, only the
  // bridge itself (workers on one node cannot reach each other's ports).
  Status IsolatePort(int index);
  Status AddAddress(int index, Ipv4 address, int prefix_len);
  Status AddDefaultRoute(Ipv4 gateway, int index);

 private:
  explicit Netlink(Fd fd) : fd_(std::move(fd)) {}
  // Sends the message in `buf` (its header's length, sequence and flags set here) and waits for
  // the kernel's acknowledgement; a negative one as an error naming `what`. A link in the
  // answer (RTM_GETLINK) leaves its index in *link_index when that is not null.
  Status Call(std::string* buf, const std::string& what, int* link_index = nullptr);

  Fd fd_;
  uint32_t seq_ = 0;
};

}  // namespace gantry::agent::net
