#include "agent/net/worker_network.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <fcntl.h>
#include <ifaddrs.h>
#include <net/if.h>
#include <netdb.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstring>

#include "agent/net/firewall.h"
#include "common/log.h"
#include "http/address_policy.h"
#include "http/http.h"

namespace gantry::agent::net {
namespace {

// Writes `value` to the sysctl file `path`; false if it cannot.
bool WriteSysctl(const std::string& path, const char* value) {
  Fd fd(open(path.c_str(), O_WRONLY | O_CLOEXEC));
  return fd.get() >= 0 && write(fd.get(), value, 1) == 1;
}

// The IPv4 addresses of this host's interfaces.
std::vector<Ipv4> HostAddresses() {
  std::vector<Ipv4> out;
  ifaddrs* list = nullptr;
  if (getifaddrs(&list) != 0) return out;
  for (ifaddrs* i = list; i; i = i->ifa_next) {
    if (i->ifa_addr && i->ifa_addr->sa_family == AF_INET) {
      out.push_back(ntohl(reinterpret_cast<sockaddr_in*>(i->ifa_addr)->sin_addr.s_addr));
    }
  }
  freeifaddrs(list);
  return out;
}

bool IsLoopbackHost(const std::string& host) {
  return host == "localhost" || host == "::1" || host.rfind("127.", 0) == 0;
}

}  // namespace

Result<std::pair<Ipv4, int>> ParseCidr(const std::string& cidr) {
  auto c = http::ParseCidr(cidr);
  // An IPv4 range (http::Cidr holds it IPv4-mapped, its prefix over 128 bits) of 8 to 22 bits.
  constexpr unsigned char kMapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
  const int bits = c.ok() ? c->prefix_len - 96 : -1;
  if (!c.ok() || cidr.find('/') == std::string::npos ||
      std::memcmp(c->addr, kMapped, sizeof kMapped) != 0 || bits < 8 || bits > kSubnetPrefix) {
    return InvalidArgument("'" + cidr + "': not an IPv4 range holding a /22 (ADDRESS/8 to /22)");
  }
  const Ipv4 a = Ipv4{c->addr[12]} << 24 | Ipv4{c->addr[13]} << 16 | Ipv4{c->addr[14]} << 8 |
                 Ipv4{c->addr[15]};
  return std::make_pair(a & (~Ipv4{0} << (32 - bits)), bits);
}

Result<std::unique_ptr<WorkerNetwork>> WorkerNetwork::Open(NetworkOptions options) {
  if (options.tag.size() != 6 ||
      options.tag.find_first_not_of("0123456789abcdef") != std::string::npos) {
    return InvalidArgument("worker network: the tag must be 6 hex digits");
  }
  if (geteuid() != 0) return PermissionDenied("worker network: the agent is not root");
  std::unique_ptr<WorkerNetwork> n(new WorkerNetwork(std::move(options)));
  if (Status s = n->Init(); !s.ok()) {
    n->Stop();
    return s;
  }
  return n;
}

std::string WorkerNetwork::HostVeth(uint32_t n) const {
  char hex[16];
  snprintf(hex, sizeof hex, "%x", n);
  return "gv" + options_.tag + hex;
}

// Removes the bridge and rules of every agent that died holding a lock file (its lock is free).
static void RemoveDeadAgents(const std::string& lock_dir, const std::string& own, Netlink* nl) {
  DIR* d = opendir(lock_dir.c_str());
  if (!d) return;
  while (dirent* e = readdir(d)) {
    std::string name = e->d_name;
    if (name.size() != 11 || !name.ends_with(".lock") || name == own + ".lock") continue;
    const std::string path = lock_dir + "/" + name;
    Fd fd(open(path.c_str(), O_RDWR | O_CLOEXEC | O_NOFOLLOW));
    if (fd.get() < 0 || flock(fd.get(), LOCK_EX | LOCK_NB) != 0) continue;  // alive
    const std::string tag = name.substr(0, 6);
    GLOG_INFO("agent: removing the worker network of a dead agent (gantry-%s)", tag.c_str());
    RemoveFirewall(tag);
    (void)nl->DeleteLink("gantry-" + tag);
    unlink(path.c_str());
  }
  closedir(d);
}

Status WorkerNetwork::Init() {
  auto server = http::ParseUrl(options_.server_url);
  if (!server.ok()) {
    return InvalidArgument("worker network: bad server URL " + options_.server_url);
  }
  if (IsLoopbackHost(server->host)) loopback_port_ = std::to_string(server->port);
  auto nl = Netlink::Open();
  if (!nl.ok()) return nl.status();
  host_ = std::make_unique<Netlink>(std::move(*nl));
  mkdir(options_.lock_dir.c_str(), 0700);
  // Agents starting at once on one host take turns from here until the bridge is made: each
  // takes its lock file, clears what dead agents left and picks a free subnet with no other
  // agent between its steps (one starting could otherwise be taken for a dead one).
  Fd turn(open((options_.lock_dir + "/subnets").c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600));
  if (turn.get() < 0 || flock(turn.get(), LOCK_EX) != 0) {
    return ErrnoStatus("worker network: lock " + options_.lock_dir + "/subnets", errno);
  }
  lock_.Reset(open((options_.lock_dir + "/" + options_.tag + ".lock").c_str(),
                   O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600));
  if (lock_.get() < 0) return ErrnoStatus("worker network: lock file", errno);
  if (flock(lock_.get(), LOCK_EX | LOCK_NB) != 0) {
    lock_.Reset();  // not ours: Stop() must not remove that agent's network
    return FailedPrecondition("worker network: another agent with this data directory runs");
  }
  RemoveDeadAgents(options_.lock_dir, options_.tag, host_.get());
  // What this data directory's last agent left: its bridge here, its rules by InstallFirewall.
  (void)host_->DeleteLink(Bridge());
  GANTRY_RETURN_IF_ERROR(MakeBridge());
  const std::string conf = "/proc/sys/net/ipv4/conf/" + Bridge() + "/route_localnet";
  if (!loopback_port_.empty() && !WriteSysctl(conf, "1")) {
    return Internal("worker network: cannot set " + conf);
  }
  (void)WriteSysctl("/proc/sys/net/ipv6/conf/" + Bridge() + "/disable_ipv6", "1");
  char forward = '0';
  Fd f(open("/proc/sys/net/ipv4/ip_forward", O_RDONLY | O_CLOEXEC));
  if (f.get() >= 0 && read(f.get(), &forward, 1) == 1 && forward != '1') {
    if (!WriteSysctl("/proc/sys/net/ipv4/ip_forward", "1")) {
      GLOG_WARN("agent: cannot switch on IPv4 forwarding: workers cannot reach the internet");
    } else {
      GLOG_INFO("agent: switched on IPv4 forwarding (net.ipv4.ip_forward=1) for the workers");
    }
  }
  FirewallRules rules{options_.tag, Bridge(), subnet_, kSubnetPrefix, gateway_, loopback_port_, {}};
  if (loopback_port_.empty()) {
    // A server at an address of this host is reached there (not forwarded: the host's input).
    addrinfo hints{}, *res = nullptr;
    hints.ai_family = AF_INET;
    if (getaddrinfo(server->host.c_str(), nullptr, &hints, &res) == 0) {
      const std::vector<Ipv4> own = HostAddresses();
      for (addrinfo* i = res; i; i = i->ai_next) {
        Ipv4 a = ntohl(reinterpret_cast<sockaddr_in*>(i->ai_addr)->sin_addr.s_addr);
        if (std::find(own.begin(), own.end(), a) != own.end()) {
          rules.server_addresses.push_back(Ipv4Text(a) + ":" + std::to_string(server->port));
        }
      }
      freeaddrinfo(res);
    }
  }
  return InstallFirewall(rules);
}

Status WorkerNetwork::MakeBridge() {
  auto pool = ParseCidr(options_.pool);
  if (!pool.ok()) return pool.status();
  const std::vector<Ipv4> used = HostAddresses();
  const uint64_t size = uint64_t{1} << (32 - kSubnetPrefix);
  const uint64_t count = uint64_t{1} << (kSubnetPrefix - pool->second);
  for (uint64_t k = 0; k < count && subnet_ == 0; ++k) {
    const Ipv4 s = pool->first + static_cast<Ipv4>(k * size);
    bool taken = false;
    for (Ipv4 a : used) taken |= a >= s && a < s + size;
    if (!taken) subnet_ = s;
  }
  if (subnet_ == 0) return ResourceExhausted("worker network: no free /22 in " + options_.pool);
  gateway_ = subnet_ + 1;
  GANTRY_RETURN_IF_ERROR(host_->AddBridge(Bridge()));
  auto index = host_->LinkIndex(Bridge());
  if (!index.ok()) return index.status();
  bridge_index_ = *index;
  return host_->AddAddress(bridge_index_, gateway_, kSubnetPrefix);
}

Status WorkerNetwork::SetUpNamespace(Netlink* inside, Ipv4 address) const {
  GANTRY_RETURN_IF_ERROR(inside->SetUp(1));  // loopback: a fresh namespace's first link
  auto eth0 = inside->LinkIndex("eth0");
  if (!eth0.ok()) return eth0.status();
  GANTRY_RETURN_IF_ERROR(inside->SetUp(*eth0));
  GANTRY_RETURN_IF_ERROR(inside->AddAddress(*eth0, address, kSubnetPrefix));
  return inside->AddDefaultRoute(gateway_, *eth0);
}

Result<WorkerNetwork::Namespace> WorkerNetwork::Attach() {
  Fd ns;
  auto inside = Netlink::OpenInNewNamespace(&ns);
  if (!inside.ok()) return inside.status();
  std::lock_guard<std::mutex> lock(mu_);
  if (stopped_) return FailedPrecondition("worker network: stopped");
  const uint32_t last = (1u << (32 - kSubnetPrefix)) - 2;  // the broadcast address is not a host
  uint32_t n = 0;
  for (uint32_t tries = 1; tries < last && n == 0; ++tries) {
    const uint32_t candidate = next_;
    next_ = next_ >= last ? 2 : next_ + 1;
    if (if_nametoindex(HostVeth(candidate).c_str()) == 0) n = candidate;
  }
  if (n == 0) return ResourceExhausted("worker network: every address is in use");
  const std::string veth = HostVeth(n);
  Status s = host_->AddVeth(veth, bridge_index_, "eth0", ns.get());
  if (s.ok()) {
    const unsigned index = if_nametoindex(veth.c_str());
    s = index == 0 ? NotFound("worker network: " + veth + " vanished")
                   : host_->IsolatePort(static_cast<int>(index));
  }
  if (s.ok()) s = SetUpNamespace(&*inside, subnet_ + n);
  if (!s.ok()) {
    (void)host_->DeleteLink(veth);
    return s;
  }
  return Namespace{std::move(ns), subnet_ + n};
}

std::string WorkerNetwork::WorkerUrl(const std::string& value) const {
  if (loopback_port_.empty()) return value;
  auto u = http::ParseUrl(value);
  if (!u.ok() || !IsLoopbackHost(u->host) || std::to_string(u->port) != loopback_port_) {
    return value;
  }
  const size_t start = value.find("://") + 3;
  const size_t end = value.find_first_of("/?#", start);
  return value.substr(0, start) + Ipv4Text(gateway_) + ":" + loopback_port_ +
         (end == std::string::npos ? "" : value.substr(end));
}

void WorkerNetwork::RewriteEnvironment(std::map<std::string, std::string>* env) const {
  std::string tls_name;
  for (auto& [key, value] : *env) {
    std::string changed = WorkerUrl(value);
    if (changed == value) continue;
    if (auto u = http::ParseUrl(value); u.ok() && u->tls) tls_name = u->host;
    value = std::move(changed);
  }
  if (!tls_name.empty()) (*env)["GANTRY_TLS_SERVER_NAME"] = tls_name;
}

std::string WorkerNetwork::describe() const {
  return "own network namespace (" + Ipv4Text(subnet_) + "/" + std::to_string(kSubnetPrefix) +
         " on " + Bridge() + ")";
}

void WorkerNetwork::Stop() {
  std::lock_guard<std::mutex> lock(mu_);
  if (stopped_) return;
  stopped_ = true;
  if (!host_ || lock_.get() < 0) return;  // nothing of ours was made
  RemoveFirewall(options_.tag);
  (void)host_->DeleteLink(Bridge());
  unlink((options_.lock_dir + "/" + options_.tag + ".lock").c_str());
  lock_.Reset();
}

}  // namespace gantry::agent::net
