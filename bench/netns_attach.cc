// What a worker's own network namespace costs its start: WorkerNetwork::Attach() timed N times
// (each namespace closed at once, as the agent closes it once the worker has joined), against
// fork+exec+wait of /bin/true in the same run (the cheapest process start there is). Root only.
//
//   build/bench/netns_attach [N]       (default 200; prints a markdown table)
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "agent/net/worker_network.h"

using Clock = std::chrono::steady_clock;

static double Ms(Clock::duration d) { return std::chrono::duration<double, std::milli>(d).count(); }

static void Row(const char* what, std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const double p50 = v[v.size() / 2], p99 = v[std::min(v.size() - 1, v.size() * 99 / 100)];
  std::printf("| %s | %zu | %.2f | %.2f |\n", what, v.size(), p50, p99);
}

int main(int argc, char** argv) {
  const int n = argc > 1 ? std::atoi(argv[1]) : 200;
  gantry::agent::net::NetworkOptions o;
  char tag[8];
  std::snprintf(tag, sizeof tag, "%06x", static_cast<unsigned>(getpid()) & 0xffffff);
  o.tag = tag;
  o.server_url = "http://127.0.0.1:8000";
  auto net = gantry::agent::net::WorkerNetwork::Open(o);
  if (!net.ok()) {
    std::fprintf(stderr, "netns_attach: %s\n", net.status().ToString().c_str());
    return 1;
  }
  std::vector<double> attach, spawn;
  for (int i = 0; i < n; ++i) {
    auto t0 = Clock::now();
    auto ns = (*net)->Attach();
    attach.push_back(Ms(Clock::now() - t0));
    if (!ns.ok()) {
      std::fprintf(stderr, "netns_attach: %s\n", ns.status().ToString().c_str());
      return 1;
    }
    t0 = Clock::now();
    pid_t pid = fork();
    if (pid == 0) {
      execl("/bin/true", "true", nullptr);
      _exit(127);
    }
    waitpid(pid, nullptr, 0);
    spawn.push_back(Ms(Clock::now() - t0));
  }
  std::printf("| step | n | p50 ms | p99 ms |\n|---|---:|---:|---:|\n");
  Row("fork+exec+wait of /bin/true (baseline)", spawn);
  Row("WorkerNetwork::Attach() (namespace, veth, address, route)", attach);
  return 0;
}
