#pragma once
// The firewall rules of a node's worker network (worker_network.h), as iptables commands (the
// iptables of the host: nf_tables or legacy). Every rule sits in a chain of the node's own,
// GANTRY-<tag>-{IN,FWD,PRE,POST}, reached by one jump from INPUT, FORWARD, nat PREROUTING and nat
// POSTROUTING, so that removing the node's rules never touches anyone else's. Run at agent
// start and stop only; a worker's start runs none.

#include <string>
#include <vector>

#include "agent/net/netlink.h"
#include "common/status.h"

namespace gantry::agent::net {

struct FirewallRules {
  std::string tag;     // names the chains
  std::string bridge;  // the workers' bridge
  Ipv4 subnet = 0;
  int prefix_len = 0;
  Ipv4 gateway = 0;
  // When not empty: connections from workers to gateway:port go to 127.0.0.1:port (the server
  // on loopback).
  std::string loopback_port;
  // Other host addresses workers may reach the server at ("ADDRESS:PORT"): the server's own when
  // its URL names an address of this host.
  std::vector<std::string> server_addresses;
};

// The iptables argv lists that install `rules` (after RemoveFirewallCommands of its tag): from
// the bridge, the host accepts only replies and the server's port; forwarding takes workers'
// connections out (not to link-local addresses, not to other workers) and only replies back
// in; what leaves for elsewhere is masqueraded.
std::vector<std::vector<std::string>> InstallFirewallCommands(const FirewallRules& rules);
// The argv lists that remove the chains of `tag` and the jumps to them (each may fail when
// there is nothing to remove).
std::vector<std::vector<std::string>> RemoveFirewallCommands(const std::string& tag);

// Runs them with the host's iptables. Install stops at the first failure, naming the rule;
// Remove runs all, ignoring failures.
Status InstallFirewall(const FirewallRules& rules);
void RemoveFirewall(const std::string& tag);

}  // namespace gantry::agent::net
