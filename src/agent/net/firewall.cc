#include "agent/net/firewall.h"

#include "common/log.h"
#include "common/subprocess.h"

namespace gantry::agent::net {
namespace {

using Argv = std::vector<std::string>;

struct Chain {
  const char* table;
  const char* parent;
  const char* suffix;
};
constexpr Chain kChains[] = {{"filter", "INPUT", "IN"},
                             {"filter", "FORWARD", "FWD"},
                             {"nat", "PREROUTING", "PRE"},
                             {"nat", "POSTROUTING", "POST"}};

std::string ChainName(const std::string& tag, const Chain& c) {
  return "GANTRY-" + tag + "-" + c.suffix;
}

Argv Rule(const char* table, const std::string& chain, Argv match) {
  Argv argv{"-t", table, "-A", chain};
  argv.insert(argv.end(), match.begin(), match.end());
  return argv;
}

}  // namespace

std::vector<Argv> InstallFirewallCommands(const FirewallRules& r) {
  const std::string br = r.bridge;
  const std::string in = ChainName(r.tag, kChains[0]), fwd = ChainName(r.tag, kChains[1]);
  const std::string pre = ChainName(r.tag, kChains[2]), post = ChainName(r.tag, kChains[3]);
  std::vector<Argv> out;
  for (const Chain& c : kChains) out.push_back({"-t", c.table, "-N", ChainName(r.tag, c)});
  // The host, from the workers: replies, and the server only.
  out.push_back(Rule("filter", in, {"!", "-i", br, "-j", "RETURN"}));
  out.push_back(
      Rule("filter", in, {"-m", "conntrack", "--ctstate", "ESTABLISHED,RELATED", "-j", "ACCEPT"}));
  if (!r.loopback_port.empty()) {
    // Only the server's port is forwarded to loopback (the nat rule below): what arrives here
    // so changed is the server.
    out.push_back(Rule("filter", in, {"-m", "conntrack", "--ctstate", "DNAT", "-j", "ACCEPT"}));
  }
  for (const std::string& a : r.server_addresses) {
    const size_t colon = a.rfind(':');
    out.push_back(Rule(
        "filter", in,
        {"-p", "tcp", "-d", a.substr(0, colon), "--dport", a.substr(colon + 1), "-j", "ACCEPT"}));
  }
  out.push_back(Rule("filter", in, {"-j", "DROP"}));
  // Through the host: workers' connections out, replies in, nothing else.
  out.push_back(
      Rule("filter", fwd,
           {"-o", br, "-m", "conntrack", "--ctstate", "ESTABLISHED,RELATED", "-j", "ACCEPT"}));
  out.push_back(Rule("filter", fwd, {"-o", br, "-j", "DROP"}));
  out.push_back(Rule("filter", fwd, {"!", "-i", br, "-j", "RETURN"}));
  out.push_back(Rule("filter", fwd, {"-d", "169.254.0.0/16", "-j", "DROP"}));
  out.push_back(Rule("filter", fwd, {"-j", "ACCEPT"}));
  if (!r.loopback_port.empty()) {
    out.push_back(
        Rule("nat", pre,
             {"-i", br, "-d", Ipv4Text(r.gateway), "-p", "tcp", "--dport", r.loopback_port, "-j",
              "DNAT", "--to-destination", "127.0.0.1:" + r.loopback_port}));
  }
  out.push_back(Rule("nat", post,
                     {"-s", Ipv4Text(r.subnet) + "/" + std::to_string(r.prefix_len), "!", "-o", br,
                      "-j", "MASQUERADE"}));
  for (const Chain& c : kChains) {
    out.push_back({"-t", c.table, "-I", c.parent, "1", "-j", ChainName(r.tag, c)});
  }
  return out;
}

std::vector<Argv> RemoveFirewallCommands(const std::string& tag) {
  std::vector<Argv> out;
  for (const Chain& c : kChains) {
    out.push_back({"-t", c.table, "-D", c.parent, "-j", ChainName(tag, c)});
    out.push_back({"-t", c.table, "-F", ChainName(tag, c)});
    out.push_back({"-t", c.table, "-X", ChainName(tag, c)});
  }
  return out;
}

static Result<SubprocessResult> Iptables(const Argv& args) {
  static const std::string iptables = FindExecutable("iptables");
  if (iptables.empty()) return FailedPrecondition("iptables is not installed");
  Argv argv{iptables, "-w", "5"};
  argv.insert(argv.end(), args.begin(), args.end());
  SubprocessOptions o;
  o.env = {std::string("PATH=") + kSystemPath};
  o.timeout_ms = 15'000;
  return RunProcess(argv, o);
}

Status InstallFirewall(const FirewallRules& rules) {
  RemoveFirewall(rules.tag);
  for (const Argv& args : InstallFirewallCommands(rules)) {
    auto r = Iptables(args);
    if (!r.ok()) return r.status();
    if (!r->succeeded()) {
      std::string cmd = "iptables";
      for (const std::string& a : args) cmd += " " + a;
      return Internal(cmd + ": " + DescribeWaitStatus(r->wait_status) + ": " + r->output);
    }
  }
  return Status::Ok();
}

void RemoveFirewall(const std::string& tag) {
  for (const Argv& args : RemoveFirewallCommands(tag)) {
    // A jump may be there twice (two agents of one data directory): delete until none is.
    for (int i = 0; i < 4; ++i) {
      auto r = Iptables(args);
      if (!r.ok() || !r->succeeded() || args[2] != "-D") break;
    }
  }
}

}  // namespace gantry::agent::net
