// The worker network, for real (root only: it makes a bridge, namespaces and iptables rules,
// all named for a tag of the test's own and removed at its end).
#include "agent/net/worker_network.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <net/if.h>
#include <poll.h>
#include <sched.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <random>

#include "agent/net/firewall.h"
#include "common/subprocess.h"

namespace gantry::agent::net {
namespace {

TEST(FirewallTest, RulesAreTheNodesOwnAndForwardOnlyTheServersPort) {
  FirewallRules r{"abc123", "gantry-abc123", 0x0ad50000, 22, 0x0ad50001, "8000", {}};
  std::string all;
  for (const auto& argv : InstallFirewallCommands(r)) {
    for (const auto& a : argv) all += a + " ";
    all += "\n";
  }
  EXPECT_NE(all.find("-t nat -A GANTRY-abc123-PRE -i gantry-abc123 -d 10.213.0.1 -p tcp --dport "
                     "8000 -j DNAT --to-destination 127.0.0.1:8000"),
            std::string::npos)
      << all;
  EXPECT_NE(all.find("-t filter -A GANTRY-abc123-IN -j DROP"), std::string::npos);
  EXPECT_NE(all.find("-d 169.254.0.0/16 -j DROP"), std::string::npos);
  EXPECT_NE(all.find("-s 10.213.0.0/22 ! -o gantry-abc123 -j MASQUERADE"), std::string::npos);
  // Every rule is in a chain of the tag's, but the four jumps to them.
  int jumps = 0;
  for (const auto& argv : InstallFirewallCommands(r)) {
    if (argv[2] == "-I") {
      ++jumps;
      EXPECT_EQ(argv.back().rfind("GANTRY-abc123-", 0), 0u);
    } else {
      EXPECT_EQ(argv[3].rfind("GANTRY-abc123-", 0), 0u) << argv[3];
    }
  }
  EXPECT_EQ(jumps, 4);
  r.loopback_port = "";
  r.server_addresses = {"192.168.1.5:8000"};
  all.clear();
  for (const auto& argv : InstallFirewallCommands(r)) {
    for (const auto& a : argv) all += a + " ";
  }
  EXPECT_EQ(all.find("DNAT"), std::string::npos);
  EXPECT_NE(all.find("-p tcp -d 192.168.1.5 --dport 8000 -j ACCEPT"), std::string::npos);
}

TEST(CidrTest, Parses) {
  auto c = ParseCidr("10.213.7.9/16");
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(Ipv4Text(c->first), "10.213.0.0");
  EXPECT_EQ(c->second, 16);
  EXPECT_FALSE(ParseCidr("10.213.0.0/24").ok());  // smaller than one subnet
  EXPECT_FALSE(ParseCidr("10.213.0.0").ok());
  EXPECT_FALSE(ParseCidr("x/16").ok());
}

// A listening TCP socket on `address` (host order); its port in *port.
Fd Listen(Ipv4 address, int* port) {
  Fd fd(socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(address);
  socklen_t len = sizeof a;
  if (bind(fd.get(), reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 || listen(fd.get(), 8) != 0 ||
      getsockname(fd.get(), reinterpret_cast<sockaddr*>(&a), &len) != 0) {
    return Fd();
  }
  *port = ntohs(a.sin_port);
  return fd;
}

// Whether a TCP connection to address:port is accepted within 2 s (a dropped one never is).
bool Connects(Ipv4 address, int port) {
  Fd fd(socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(address);
  a.sin_port = htons(static_cast<uint16_t>(port));
  if (connect(fd.get(), reinterpret_cast<sockaddr*>(&a), sizeof a) == 0) return true;
  if (errno != EINPROGRESS) return false;
  pollfd p{fd.get(), POLLOUT, 0};
  if (poll(&p, 1, 2000) != 1) return false;
  int err = 0;
  socklen_t len = sizeof err;
  getsockopt(fd.get(), SOL_SOCKET, SO_ERROR, &err, &len);
  return err == 0;
}

// Runs `check` in a child that joined the namespace `ns_fd`; its result.
template <typename F>
bool InNamespace(int ns_fd, F check) {
  pid_t pid = fork();
  if (pid == 0) _exit(setns(ns_fd, CLONE_NEWNET) == 0 && check() ? 0 : 1);
  int status = 0;
  waitpid(pid, &status, 0);
  return WIFEXITED(status) && WEXITSTATUS(status) == 0;
}

class WorkerNetworkTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (geteuid() != 0) GTEST_SKIP() << "needs root";
    char tag[8];
    snprintf(tag, sizeof tag, "%06x", std::random_device{}() & 0xffffff);
    tag_ = tag;
  }

  Result<std::unique_ptr<WorkerNetwork>> OpenNetwork(const std::string& tag, int server_port) {
    NetworkOptions o;
    o.tag = tag;
    o.server_url = "http://127.0.0.1:" + std::to_string(server_port);
    // The host's lock directory: agents (and tests) running at once take turns there.
    return WorkerNetwork::Open(o);
  }

  std::string tag_;
};

TEST_F(WorkerNetworkTest, AWorkerReachesTheServerAndNothingElseOfTheHost) {
  int server = 0, other = 0, wildcard = 0;
  Fd s = Listen(0x7f000001, &server), o = Listen(0x7f000001, &other), w = Listen(0, &wildcard);
  ASSERT_GE(s.get(), 0);
  auto net = OpenNetwork(tag_, server);
  ASSERT_TRUE(net.ok()) << net.status().ToString();
  auto a = (*net)->Attach();
  auto b = (*net)->Attach();
  ASSERT_TRUE(a.ok()) << a.status().ToString();
  ASSERT_TRUE(b.ok()) << b.status().ToString();
  EXPECT_NE(a->address, b->address);
  const Ipv4 gw = (*net)->gateway();
  EXPECT_TRUE(InNamespace(a->ns.get(), [&] { return Connects(gw, server); }));
  // Not the host's other ports, on loopback or on every address; not its own loopback's.
  EXPECT_FALSE(InNamespace(a->ns.get(), [&] { return Connects(gw, other); }));
  EXPECT_FALSE(InNamespace(a->ns.get(), [&] { return Connects(gw, wildcard); }));
  EXPECT_FALSE(InNamespace(a->ns.get(), [&] { return Connects(0x7f000001, server); }));
  // Not another worker: b listens in its namespace, a cannot reach it; b itself can.
  int b_port = 0;
  Fd b_listen;
  std::thread([&] {
    setns(b->ns.get(), CLONE_NEWNET);
    b_listen = Listen(0, &b_port);
  }).join();
  ASSERT_GE(b_listen.get(), 0);
  EXPECT_TRUE(InNamespace(b->ns.get(), [&] { return Connects(b->address, b_port); }));
  EXPECT_FALSE(InNamespace(a->ns.get(), [&] { return Connects(b->address, b_port); }));
  // The control: the host itself reaches b (the proxy of web endpoints will).
  EXPECT_TRUE(Connects(b->address, b_port));
  EXPECT_EQ((*net)->WorkerUrl("http://127.0.0.1:" + std::to_string(server) + "/v2/x?y=1"),
            "http://" + Ipv4Text(gw) + ":" + std::to_string(server) + "/v2/x?y=1");
  EXPECT_EQ((*net)->WorkerUrl("http://127.0.0.1:1/v2"), "http://127.0.0.1:1/v2");
  EXPECT_EQ((*net)->WorkerUrl("plain"), "plain");
  std::map<std::string, std::string> env{{"U", "https://localhost:" + std::to_string(server)}};
  (*net)->RewriteEnvironment(&env);
  EXPECT_EQ(env["U"], "https://" + Ipv4Text(gw) + ":" + std::to_string(server));
  EXPECT_EQ(env["GANTRY_TLS_SERVER_NAME"], "localhost");

  (*net)->Stop();
  EXPECT_EQ(if_nametoindex(("gantry-" + tag_).c_str()), 0u);
  auto rules = RunProcess({FindExecutable("iptables-save")}, {});
  ASSERT_TRUE(rules.ok());
  EXPECT_EQ(rules->output.find("GANTRY-" + tag_), std::string::npos) << rules->output;
}

TEST_F(WorkerNetworkTest, AnAgentRemovesWhatADeadOneLeft) {
  char other[8];
  snprintf(other, sizeof other, "%06x", (std::stoi(tag_, nullptr, 16) + 1) & 0xffffff);
  pid_t pid = fork();
  if (pid == 0) {
    auto net = OpenNetwork(other, 8000);
    if (!net.ok()) _exit(1);
    (void)net->release();  // dies without Stop(), as a killed agent does
    _exit(0);
  }
  int status = 0;
  waitpid(pid, &status, 0);
  ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  ASSERT_NE(if_nametoindex((std::string("gantry-") + other).c_str()), 0u);
  auto net = OpenNetwork(tag_, 8000);
  ASSERT_TRUE(net.ok()) << net.status().ToString();
  EXPECT_EQ(if_nametoindex((std::string("gantry-") + other).c_str()), 0u);
  auto rules = RunProcess({FindExecutable("iptables-save")}, {});
  ASSERT_TRUE(rules.ok());
  EXPECT_EQ(rules->output.find(std::string("GANTRY-") + other), std::string::npos);
  // A second agent of the same data directory is refused, and leaves the first one's alone.
  EXPECT_FALSE(OpenNetwork(tag_, 8000).ok());
  EXPECT_NE(if_nametoindex(("gantry-" + tag_).c_str()), 0u);
}

}  // namespace
}  // namespace gantry::agent::net
