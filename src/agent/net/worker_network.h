#pragma once
// WorkerNetwork: each worker in a network namespace of its own (docs/security.md).
//
// When the agent is root (and the node was not started with --host-network), Open() makes a
// bridge `gantry-<tag>` holding the gateway address (the first of a /22 taken from 10.213.0.0/16
// that no interface of the host uses) and firewall rules of its own (firewall.h). Each worker
// process, container (its OCI runtime starts in it) or template (a template's forks share its
// namespace) then gets, by Attach(), a new network namespace holding loopback and `eth0`: a veth
// whose host end `gv<tag><n>` is an isolated port of the bridge, with an address of the subnet and
// a default route via the gateway. From there a worker reaches
//   - the server: when the agent's server URL is on loopback, at the gateway's address (the
//     firewall forwards that port to the server's loopback one; WorkerUrl() rewrites the
//     URLs a worker is given); otherwise at the server's own address;
//   - the rest of the world, through NAT (the host's IPv4 forwarding is switched on);
// and not: the host's loopback or any other service of the host, another worker (isolated
// ports), link-local addresses (a cloud's metadata service). Stop() removes the bridge and the
// rules. Each agent holds a lock file under /run/gantry-net while it runs; Open() removes what
// an agent that died left (bridge and rules of each lock file nobody holds).
//
// Threading: thread-safe (containers are prepared on threads of their own).

#include <map>
#include <memory>
#include <mutex>
#include <string>

#include "agent/net/netlink.h"
#include "common/fd.h"
#include "common/status.h"

namespace gantry::agent::net {

// Each node's workers share one subnet of this many bits.
inline constexpr int kSubnetPrefix = 22;

struct NetworkOptions {
  // Names the bridge, the veths and the firewall chains: 6 characters of [0-9a-f]. Required.
  std::string tag;
  // The server's URL as the agent uses it (e.g. http://127.0.0.1:8000). Required.
  std::string server_url;
  // Where the agents' lock files are. Default: /run/gantry-net.
  std::string lock_dir = "/run/gantry-net";
  // The addresses subnets (/22, 1021 workers each) are taken from.
  std::string pool = "10.213.0.0/16";
};

class WorkerNetwork {
 public:
  // Sets up the bridge and the firewall. Errors name what failed (not root: PermissionDenied).
  static Result<std::unique_ptr<WorkerNetwork>> Open(NetworkOptions options);
  ~WorkerNetwork() { Stop(); }

  // A new network namespace, set up as above, for a process about to start: the caller makes
  // the process join it (setns(ns, CLONE_NEWNET) before exec, or an OCI runtime started in it)
  // and may close `ns` once it has; the namespace lives while a process is in it, and its
  // address comes back once its last process has ended.
  struct Namespace {
    Fd ns;
    Ipv4 address = 0;
  };
  Result<Namespace> Attach();

  // `value` with the server's loopback URL (http(s)://127.0.0.1|localhost|[::1]:PORT) replaced
  // by the gateway's, for a worker in a namespace; other values unchanged.
  std::string WorkerUrl(const std::string& value) const;
  // WorkerUrl() of each value in `env`; when an https URL changed, GANTRY_TLS_SERVER_NAME is the
  // name the server's certificate is checked against (the original host).
  void RewriteEnvironment(std::map<std::string, std::string>* env) const;

  // "own namespace per worker (10.213.4.0/22 on gantry-1a2b3c)", for `gantry nodes`.
  std::string describe() const;
  Ipv4 gateway() const { return gateway_; }

  // Removes the bridge and the firewall rules. Idempotent.
  void Stop();

 private:
  explicit WorkerNetwork(NetworkOptions options) : options_(std::move(options)) {}
  Status Init();
  // Picks a free subnet and makes the bridge holding its gateway (Init() holds the lock
  // directory's turn, so that agents starting at once pick different ones).
  Status MakeBridge();
  Status SetUpNamespace(Netlink* inside, Ipv4 address) const;
  std::string Bridge() const { return "gantry-" + options_.tag; }
  std::string HostVeth(uint32_t n) const;

  NetworkOptions options_;
  std::string loopback_port_;      // the server's port when its URL is on loopback, else ""
  Fd lock_;                        // this agent's lock file, held while it runs
  Ipv4 subnet_ = 0, gateway_ = 0;  // of the node's /22 (kSubnetPrefix)
  bool stopped_ = false;

  mutable std::mutex mu_;
  std::unique_ptr<Netlink> host_;  // in the host's namespace
  int bridge_index_ = 0;
  // The next host number to try, round robin: a number is free when its veth is gone (it goes
  // with the last process of its namespace), so a number comes back as late as possible.
  uint32_t next_ = 2;
};

// The IPv4 range `cidr` ("10.213.0.0/16", 8 to 22 bits: it holds a /22) as (network, prefix
// length); InvalidArgument otherwise.
Result<std::pair<Ipv4, int>> ParseCidr(const std::string& cidr);

}  // namespace gantry::agent::net
