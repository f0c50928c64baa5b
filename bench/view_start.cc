// What a mount view (agent/process/mount_view.h: the sandbox of workers under an agent that is
// not root) costs a process start: LocalProcessRuntime::Start() of /bin/true until its exit is
// reaped, with and without a view, alternately in the same run (no cgroups). Works as root and
// as an unprivileged user.
//
//   build/bench/view_start [N]       (default 200; prints a markdown table)
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

#include "agent/process/process_runtime.h"

using Clock = std::chrono::steady_clock;
using gantry::agent::ProcessSpec;

static double Ms(Clock::duration d) { return std::chrono::duration<double, std::milli>(d).count(); }

static void Row(const char* what, std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const double p50 = v[v.size() / 2], p99 = v[std::min(v.size() - 1, v.size() * 99 / 100)];
  std::printf("| %s | %zu | %.2f | %.2f |\n", what, v.size(), p50, p99);
}

// Starts `spec` and reaps it: milliseconds from Start() to its exit, or -1.
static double StartAndReap(gantry::agent::ProcessRuntime* rt, const ProcessSpec& spec) {
  const auto t0 = Clock::now();
  if (!rt->Start(spec).ok()) return -1;
  for (;;) {
    for (const auto& e : rt->Reap()) {
      if (e.id == spec.id) return e.exit_code == 0 ? Ms(Clock::now() - t0) : -1;
    }
    usleep(50);
  }
}

int main(int argc, char** argv) {
  const int n = argc > 1 ? std::atoi(argv[1]) : 200;
  char dir[] = "/tmp/gantry-view-bench-XXXXXX";
  if (!mkdtemp(dir)) return 1;
  std::filesystem::create_directory(std::string(dir) + "/root");
  std::filesystem::create_directory(std::string(dir) + "/scratch");
  gantry::SystemClock clock;
  auto rt = gantry::agent::NewLocalProcessRuntime(&clock, {.use_cgroups = false});
  ProcessSpec plain;
  plain.id = "plain";
  plain.argv = {"/bin/true"};
  ProcessSpec viewed = plain;
  viewed.id = "view";
  gantry::agent::MountView v;
  v.root = std::string(dir) + "/root";
  v.binds = {{std::string(dir) + "/scratch", true}};
  viewed.view = v;
  std::vector<double> a, b;
  for (int i = 0; i < n; ++i) {
    const double x = StartAndReap(rt.get(), plain), y = StartAndReap(rt.get(), viewed);
    if (x < 0 || y < 0) {
      std::fprintf(stderr, "view_start: a start failed\n");
      return 1;
    }
    a.push_back(x);
    b.push_back(y);
  }
  std::filesystem::remove_all(dir);
  std::printf("| start of /bin/true until reaped (uid %d) | n | p50 ms | p99 ms |\n", geteuid());
  std::printf("|---|---:|---:|---:|\n");
  Row("plain (baseline)", a);
  Row("in a mount view (user, mount, PID, IPC namespaces)", b);
  return 0;
}
