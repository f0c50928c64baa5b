// TemplateManager on real processes: a real ProcessRuntime runs real Python templates (the SDK's
// template mode), so forks, crashes and handshakes are the real ones. Snapshots use a fake
// Snapshotter for the bookkeeping tests and the real CRIU for the restore tests.

#include "agent/template/template_manager.h"

#include <gtest/gtest.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include "agent/snapshot/fake_snapshotter.h"
#include "common/procfs.h"

namespace gantry::agent {
namespace {
namespace fs = std::filesystem;

std::string ReadFile(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// The environment of `pid`, from /proc.
std::map<std::string, std::string> EnvironOf(int pid) {
  std::string raw = ReadFile("/proc/" + std::to_string(pid) + "/environ");
  std::map<std::string, std::string> env;
  size_t start = 0;
  while (start < raw.size()) {
    size_t end = raw.find('\0', start);
    if (end == std::string::npos) end = raw.size();
    std::string kv = raw.substr(start, end - start);
    if (size_t eq = kv.find('='); eq != std::string::npos)
      env[kv.substr(0, eq)] = kv.substr(eq + 1);
    start = end + 1;
  }
  return env;
}

int ParentOf(int pid) {
  std::string stat = ReadFile("/proc/" + std::to_string(pid) + "/stat");
  size_t close = stat.rfind(')');
  if (close == std::string::npos) return -1;
  char state;
  int ppid;
  sscanf(stat.c_str() + close + 1, " %c %d", &state, &ppid);
  return ppid;
}

// A Snapshotter that writes `bytes` into each image (so that disk budgets have something to
// count) and otherwise behaves like FakeSnapshotter.
class SizedSnapshotter final : public Snapshotter {
 public:
  explicit SizedSnapshotter(int64_t bytes) : bytes_(bytes) {}
  Status Check() override { return fake_.Check(); }
  Status Dump(int pid, const std::string& dir, bool leave_running) override {
    fs::create_directories(dir);
    std::ofstream(dir + "/pages.img") << std::string(bytes_, 'x');
    return fake_.Dump(pid, dir, leave_running);
  }
  Result<int> Restore(const std::string& dir, RestoreMode mode, int = -1) override {
    return fake_.Restore(dir, mode);
  }
  FakeSnapshotter fake_;

 private:
  int64_t bytes_;
};

class TemplateManagerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           ("gantry-tpl-test-" + std::to_string(getpid()) + "-" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
    handler_ = dir_ + "/handler.py";
    std::ofstream(handler_) << R"(import os, sys
import runpod
if os.environ.get("FAIL_INIT"):
    sys.exit(3)
INIT_PID = os.getpid()
print("initialised", flush=True)
runpod.serverless.start({"handler": lambda job: {"pid": os.getpid()}})
)";
    runtime_ = NewLocalProcessRuntime(&clock_, {});
  }

  void TearDown() override {
    manager_.reset();
    runtime_.reset();
    if (HasFailure()) {
      printf("kept %s for inspection\n", dir_.c_str());
    } else {
      fs::remove_all(dir_);
    }
  }

  void MakeManager(Snapshotter* snapshotter, TemplateOptions options = {}, HostProbe probe = {}) {
    options.dir = dir_ + "/templates";
    options.budget_check_ms = 0;
    // The host has room unless a test says otherwise.
    if (!probe.available_memory_kb) probe.available_memory_kb = [] { return int64_t{1} << 40; };
    if (!probe.free_disk_kb)
      probe.free_disk_kb = [](const std::string&) { return int64_t{1} << 40; };
    manager_ = std::make_unique<TemplateManager>(&clock_, runtime_.get(), snapshotter, options,
                                                 std::move(probe));
  }

  // A worker's spec as the reconciler makes it.
  ProcessSpec Worker(const std::string& id, const std::string& gpus = "") {
    ProcessSpec spec;
    spec.id = "t" + std::to_string(getpid()) + "-" + id;
    spec.argv = {"/usr/bin/python3", handler_};
    spec.workdir = dir_;
    spec.env = {{"PATH", "/usr/bin:/bin"},
                {"PYTHONPATH", GANTRY_SDK_PATH},
                {"PYTHONUNBUFFERED", "1"},
                {"RUNPOD_POD_ID", spec.id},
                {"RUNPOD_AI_API_KEY", "secret-" + id},
                {"RUNPOD_WEBHOOK_GET_JOB", "http://127.0.0.1:9/job-take/" + spec.id + "?x=1"},
                {"RUNPOD_WEBHOOK_POST_OUTPUT", "http://127.0.0.1:9/job-done/" + spec.id + "?x=1"},
                {"CUDA_VISIBLE_DEVICES", gpus}};
    spec.memory_mb = 256;
    return spec;
  }

  // Steps the manager (and reaps, as the reconciler does) until `pred` holds.
  bool StepUntil(const std::function<bool()>& pred, int timeout_ms = 30'000) {
    auto t0 = std::chrono::steady_clock::now();
    for (;;) {
      manager_->ReadReports();
      for (const ProcessExit& e : runtime_->Reap()) {
        if (TemplateManager::OwnsProcess(e.id)) {
          manager_->OnExit(e);
        } else {
          exits_.push_back(e);
        }
      }
      for (const LogLine& l : runtime_->DrainLogs()) {
        if (TemplateManager::OwnsProcess(l.id)) {
          manager_->OnLog(l);
        } else {
          lines_.push_back(l);
        }
      }
      manager_->Step();
      if (pred()) return true;
      if (std::chrono::steady_clock::now() - t0 > std::chrono::milliseconds(timeout_ms)) {
        return false;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
  }

  bool Ready(const std::string& key) {
    return StepUntil([&] { return manager_->Get(key) == TemplateManager::State::kReady; });
  }

  int TemplatePid() {
    auto reports = manager_->Reports();
    return reports.empty() ? 0 : reports[0].pid;
  }

  // Steps until the worker `id` has exited (its exit is in exits_).
  bool Exited(const std::string& id) {
    return StepUntil([&] {
      return std::any_of(exits_.begin(), exits_.end(),
                         [&](const ProcessExit& e) { return e.id == id; });
    });
  }

  // A container template's spec for `key`: `unshare --pid --fork` stands in for the OCI runtime,
  // with the same shape (the runtime's process is the parent of the PID namespace's init, the
  // template).
  ProcessSpec ContainerTemplate(const std::string& key) {
    ProcessSpec c;
    c.id = TemplateManager::NewProcessId(key);
    c.argv = {"/usr/bin/unshare", "--pid", "--fork", "/usr/bin/python3", handler_};
    c.workdir = dir_;
    c.env = manager_->TemplateEnvironment(key, Worker("first").env, /*container=*/true);
    c.env["IMAGE_VAR"] = "kept";
    c.memory_mb = 256;
    return c;
  }

  // Steps until the spare of the container template whose init is `init` (the template's only
  // child then) sits in the cgroup offered to the template `template_id`; `cgroup`: the spare's
  // /proc/<pid>/cgroup.
  bool SpareInOfferedCgroup(int init, const std::string& template_id, std::string* cgroup) {
    return StepUntil(
        [&] {
          std::ifstream children("/proc/" + std::to_string(init) + "/task/" + std::to_string(init) +
                                 "/children");
          int pid = 0;
          if (!(children >> pid)) return false;
          *cgroup = ReadFile("/proc/" + std::to_string(pid) + "/cgroup");
          return cgroup->find("/gantry/" + template_id + "-s") != std::string::npos;
        },
        5'000);
  }

  std::string dir_, handler_;
  SystemClock clock_;
  std::unique_ptr<ProcessRuntime> runtime_;
  std::unique_ptr<TemplateManager> manager_;
  std::vector<ProcessExit> exits_;
  std::vector<LogLine> lines_;  // workers' output, drained by StepUntil()
};

TEST_F(TemplateManagerTest, ForkGivesEachChildItsOwnIdentityGpusAndCgroup) {
  MakeManager(nullptr);
  const std::string key = TemplateManager::Key("ep", 1);
  manager_->Ensure(key, "ep", 1, Worker("first"));
  EXPECT_EQ(manager_->Get(key), TemplateManager::State::kStarting);
  ASSERT_TRUE(Ready(key));
  const int tpl = TemplatePid();
  ASSERT_GT(tpl, 0);
  // It initialised at nice 10 and got the default priority back once parked.
  errno = 0;
  EXPECT_EQ(getpriority(PRIO_PROCESS, tpl), 0);
  // The template runs without any worker's identity and sees no GPU.
  auto tenv = EnvironOf(tpl);
  EXPECT_EQ(tenv.count("RUNPOD_POD_ID"), 0u);
  EXPECT_EQ(tenv.count("RUNPOD_AI_API_KEY"), 0u);
  EXPECT_EQ(tenv["CUDA_VISIBLE_DEVICES"], "");

  ProcessSpec a = Worker("a", "0"), b = Worker("b", "1,2");
  auto pa = manager_->Fork(key, a);
  auto pb = manager_->Fork(key, b);
  ASSERT_TRUE(pa.ok()) << pa.status().ToString();
  ASSERT_TRUE(pb.ok()) << pb.status().ToString();
  EXPECT_NE(*pa, *pb);
  for (auto [spec, pid] : {std::pair{a, *pa}, std::pair{b, *pb}}) {
    // The environment the fork received (the process's own view of os.environ is what the
    // SDK reads; /proc shows the exec-time one, so ask the process through its children's
    // view: the ppid, the session and the cgroup are the kernel's).
    EXPECT_EQ(ParentOf(pid), getpid()) << "re-parented to the agent";
    EXPECT_EQ(getsid(pid), pid);
    EXPECT_EQ(getpgid(pid), pid);
    const std::string cg = ReadFile("/proc/" + std::to_string(pid) + "/cgroup");
    if (runtime_->limits_note().empty()) {
      EXPECT_NE(cg.find("/gantry/" + spec.id), std::string::npos) << cg;
    }
  }
  auto running = runtime_->Running();
  EXPECT_NE(std::find(running.begin(), running.end(), a.id), running.end());
  EXPECT_NE(std::find(running.begin(), running.end(), b.id), running.end());
  EXPECT_EQ(manager_->counters().forks, 2);
  EXPECT_EQ(manager_->Reports()[0].forks, 2);
}

TEST_F(TemplateManagerTest, ForkedWorkerGetsItsEnvironmentAndOutputPipes) {
  // A handler that prints its identity: the worker's own os.environ after the fork.
  std::ofstream(handler_) << R"(import os
import runpod
print("template", os.environ.get("RUNPOD_POD_ID"), flush=True)
def main():
    pass
import gantry.serverless.runtime as rt
orig = rt.Worker
class Probe:
    def __init__(self, env, cfg):
        print("worker", os.environ["RUNPOD_POD_ID"], os.environ["CUDA_VISIBLE_DEVICES"],
              os.getcwd(), flush=True)
    def run(self):
        import time
        time.sleep(60)
rt.Worker = Probe
runpod.serverless.start({"handler": lambda job: None})
)";
  MakeManager(nullptr);
  const std::string key = TemplateManager::Key("ep", 1);
  manager_->Ensure(key, "ep", 1, Worker("first"));
  ASSERT_TRUE(Ready(key));
  ProcessSpec a = Worker("a", "3");
  ASSERT_TRUE(manager_->Fork(key, a).ok());
  std::vector<std::string> lines;
  ASSERT_TRUE(StepUntil([&] {
    for (const LogLine& l : std::exchange(lines_, {})) {
      if (l.id == a.id && !l.stderr_stream) lines.push_back(l.text);  // stderr: the SDK's log
    }
    return !lines.empty();
  }));
  EXPECT_EQ(lines[0], "worker " + a.id + " 3 " + dir_);
}

// A container's template (ContainerTemplate()).
TEST_F(TemplateManagerTest, ContainerTemplateForksInItsPidNamespaceAndReportsEnds) {
  if (geteuid() != 0) GTEST_SKIP() << "a PID namespace needs root";
  MakeManager(nullptr);
  const std::string key = TemplateManager::Key("img", 1);
  ProcessSpec c = ContainerTemplate(key);
  EXPECT_EQ(c.env.count("RUNPOD_POD_ID"), 0u);
  EXPECT_EQ(c.env["GANTRY_TEMPLATE_CONTAINER"], "1");
  ASSERT_TRUE(manager_->EnsureContainer(key, "img", 1, c));
  EXPECT_FALSE(manager_->EnsureContainer(key, "img", 1, c));  // one per key
  EXPECT_FALSE(manager_->Wanted(key));
  ASSERT_TRUE(Ready(key));
  const int runtime_pid = TemplatePid();

  ProcessSpec a = Worker("a");
  a.argv.clear();
  auto pa = manager_->Fork(key, a);
  ASSERT_TRUE(pa.ok()) << pa.status().ToString();
  // The template's child (the namespace's init, whose parent is the runtime), not ours.
  const int init = ParentOf(*pa);
  EXPECT_NE(init, getpid());
  EXPECT_EQ(ParentOf(init), runtime_pid);
  EXPECT_EQ(getsid(*pa), *pa);
  if (runtime_->limits_note().empty()) {  // moved into its own cgroup by the runtime
    const std::string cg = ReadFile("/proc/" + std::to_string(*pa) + "/cgroup");
    EXPECT_NE(cg.find("/gantry/" + a.id), std::string::npos) << cg;
  }
  // It ends with the status its template reports.
  kill(*pa, SIGKILL);
  ASSERT_TRUE(Exited(a.id));
  EXPECT_EQ(exits_.back().term_signal, SIGKILL);
  EXPECT_EQ(exits_.back().pid, *pa);

  // Idle, the template makes a spare; the agent moves it into the cgroup it offered, ahead;
  // a fork hands it the next worker, whose cgroup that becomes.
  StepUntil([] { return false; }, 600);
  std::string spare;  // its /proc/<pid>/cgroup
  if (runtime_->limits_note().empty()) {
    // The spare (the template's only child now) is in the offered cgroup before any fork.
    ASSERT_TRUE(SpareInOfferedCgroup(init, c.id, &spare)) << spare;
  }
  ProcessSpec s = Worker("s");
  s.argv.clear();
  auto ps = manager_->Fork(key, s);
  ASSERT_TRUE(ps.ok()) << ps.status().ToString();
  EXPECT_EQ(ParentOf(*ps), init);
  if (runtime_->limits_note().empty()) {
    // On cgroup v1 the cgroup made ahead is renamed to the worker's id; v2 cannot rename, so
    // there the worker keeps the cgroup it was in as the spare.
    const std::string cg = ReadFile("/proc/" + std::to_string(*ps) + "/cgroup");
    if (access("/sys/fs/cgroup/cgroup.controllers", F_OK) != 0) {
      EXPECT_NE(cg.find("/gantry/" + s.id + "\n"), std::string::npos) << cg;
    } else {
      EXPECT_EQ(cg, spare);
    }
  }
  kill(*ps, SIGKILL);
  ASSERT_TRUE(Exited(s.id));

  // Dropped while a worker of it runs, the template is retired: it exits after its worker.
  ProcessSpec b = Worker("b");
  b.argv.clear();
  auto pb = manager_->Fork(key, b);
  ASSERT_TRUE(pb.ok()) << pb.status().ToString();
  manager_->Retain({});
  EXPECT_EQ(manager_->Get(key), TemplateManager::State::kNone);
  ASSERT_FALSE(StepUntil([&] { return ProcState(init) == 0 || ProcState(init) == 'Z'; }, 500));
  kill(*pb, SIGKILL);
  ASSERT_TRUE(StepUntil([&] {
    auto running = runtime_->Running();
    return std::find(running.begin(), running.end(), c.id) == running.end() &&
           std::any_of(exits_.begin(), exits_.end(),
                       [&](const ProcessExit& e) { return e.id == b.id; });
  }));
  EXPECT_EQ(exits_.back().term_signal, SIGKILL);
  EXPECT_EQ(manager_->counters().template_failures, 0);
}

TEST_F(TemplateManagerTest, ChildCrashLeavesTheTemplateServing) {
  MakeManager(nullptr);
  const std::string key = TemplateManager::Key("ep", 1);
  manager_->Ensure(key, "ep", 1, Worker("first"));
  ASSERT_TRUE(Ready(key));
  ProcessSpec a = Worker("a");
  auto pa = manager_->Fork(key, a);
  ASSERT_TRUE(pa.ok());
  kill(*pa, SIGKILL);
  ASSERT_TRUE(Exited(a.id));
  EXPECT_EQ(exits_.back().term_signal, SIGKILL);
  EXPECT_EQ(manager_->Get(key), TemplateManager::State::kReady);
  EXPECT_TRUE(manager_->Fork(key, Worker("b")).ok());
}

TEST_F(TemplateManagerTest, TemplateCrashMeansNoForkThenANewTemplate) {
  MakeManager(nullptr);
  const std::string key = TemplateManager::Key("ep", 1);
  manager_->Ensure(key, "ep", 1, Worker("first"));
  ASSERT_TRUE(Ready(key));
  const int old = TemplatePid();
  kill(old, SIGKILL);
  ASSERT_TRUE(StepUntil([&] { return manager_->Get(key) == TemplateManager::State::kNone; }));
  EXPECT_EQ(manager_->Fork(key, Worker("a")).status().code(), Code::kFailedPrecondition);
  EXPECT_EQ(manager_->counters().template_failures, 1);
  // It had worked before: the next start makes a new one.
  manager_->Ensure(key, "ep", 1, Worker("again"));
  ASSERT_TRUE(Ready(key));
  EXPECT_NE(TemplatePid(), old);
}

TEST_F(TemplateManagerTest, WorkerThatNeverParksIsNotTriedAgain) {
  MakeManager(nullptr);
  const std::string key = TemplateManager::Key("ep", 1);
  ProcessSpec w = Worker("first");
  w.env["FAIL_INIT"] = "1";
  manager_->Ensure(key, "ep", 1, w);
  ASSERT_TRUE(StepUntil([&] { return manager_->Get(key) == TemplateManager::State::kNone; }));
  manager_->Ensure(key, "ep", 1, Worker("second"));
  EXPECT_EQ(manager_->Get(key), TemplateManager::State::kNone);
  EXPECT_EQ(manager_->counters().template_failures, 1);
}

// The handshake comes from the user's process: one that is not what the SDK sends is refused,
// not an exception out of Step().
TEST_F(TemplateManagerTest, MalformedHandshakeIsRefused) {
  MakeManager(nullptr);
  const std::string key = TemplateManager::Key("ep", 1);
  ProcessSpec w = Worker("first");
  w.argv = {"/usr/bin/python3", "-c",
            "import os, socket, time\n"
            "s = socket.socket(socket.AF_UNIX)\n"
            "s.connect('\\0' + os.environ['GANTRY_TEMPLATE_SOCKET'][1:])\n"
            "s.sendall(b'{\"op\": 5}\\n')\n"
            "time.sleep(30)\n"};
  manager_->Ensure(key, "ep", 1, w);
  EXPECT_FALSE(
      StepUntil([&] { return manager_->Get(key) == TemplateManager::State::kReady; }, 1500));
}

TEST_F(TemplateManagerTest, ReadyTemplateIsCheckpointedAndKeepsServing) {
  FakeSnapshotter snap;
  MakeManager(&snap);
  const std::string key = TemplateManager::Key("ep", 1);
  manager_->Ensure(key, "ep", 1, Worker("first"));
  ASSERT_TRUE(StepUntil([&] { return manager_->HasSnapshot(key); }));
  ASSERT_EQ(snap.dumps().size(), 1u);
  EXPECT_EQ(snap.dumps()[0].pid, TemplatePid());
  EXPECT_TRUE(snap.dumps()[0].leave_running);
  // Parked (stopped) for the dump, then continued: it reconnects and serves forks again.
  ASSERT_TRUE(Ready(key));
  EXPECT_TRUE(manager_->Fork(key, Worker("a")).ok());
  EXPECT_TRUE(fs::exists(dir_ + "/templates/" + key + "/meta.json"));
  EXPECT_TRUE(manager_->Reports()[0].snapshot);
}

TEST_F(TemplateManagerTest, FailedCheckpointIsNotRetriedAndTheTemplateServes) {
  FakeSnapshotter snap;
  snap.FailNextDump(Internal("criu says no"));
  MakeManager(&snap);
  const std::string key = TemplateManager::Key("ep", 1);
  manager_->Ensure(key, "ep", 1, Worker("first"));
  ASSERT_TRUE(StepUntil([&] { return manager_->counters().snapshot_failures == 1; }));
  ASSERT_TRUE(Ready(key));
  EXPECT_FALSE(manager_->HasSnapshot(key));
  EXPECT_TRUE(manager_->Fork(key, Worker("a")).ok());
  for (int i = 0; i < 20; ++i) manager_->Step();
  EXPECT_EQ(snap.dumps().size(), 1u);
}

TEST_F(TemplateManagerTest, VersionChangeOrDeletionDropsTemplatesAndSnapshots) {
  FakeSnapshotter snap;
  MakeManager(&snap);
  const std::string v1 = TemplateManager::Key("ep", 1), other = TemplateManager::Key("zz", 1);
  manager_->Ensure(v1, "ep", 1, Worker("first"));
  ASSERT_TRUE(StepUntil([&] { return manager_->HasSnapshot(v1); }));
  ASSERT_TRUE(Ready(v1));
  manager_->Ensure(other, "zz", 1, Worker("zz"));
  ASSERT_TRUE(Ready(other));
  manager_->Retain({{"ep", 1}, {"zz", 1}});  // both current: nothing happens
  EXPECT_EQ(manager_->Get(v1), TemplateManager::State::kReady);
  manager_->Retain({{"ep", 2}, {"zz", 1}});
  EXPECT_EQ(manager_->Get(v1), TemplateManager::State::kNone);
  EXPECT_FALSE(manager_->HasSnapshot(v1));
  EXPECT_FALSE(fs::exists(dir_ + "/templates/" + v1));
  EXPECT_EQ(manager_->Get(other), TemplateManager::State::kReady);  // another endpoint
  manager_->Retain({{"ep", 2}});  // zz deleted (or its flashboot turned off)
  EXPECT_EQ(manager_->Get(other), TemplateManager::State::kNone);
}

TEST_F(TemplateManagerTest, TemplatesEvictedLeastRecentlyUsedWithinTheMemoryBudget) {
  TemplateOptions o;
  o.memory_budget_mb = 1000;
  o.snapshots = false;
  // Each template "uses" 600 MB: two do not fit.
  MakeManager(nullptr, o, HostProbe{[](int) { return int64_t{600} << 10; }});
  const std::string a = TemplateManager::Key("a", 1), b = TemplateManager::Key("b", 1);
  manager_->Ensure(a, "a", 1, Worker("a"));
  ASSERT_TRUE(Ready(a));
  manager_->Ensure(b, "b", 1, Worker("b"));
  ASSERT_TRUE(StepUntil([&] {
    return manager_->Get(b) == TemplateManager::State::kReady &&
           manager_->Get(a) == TemplateManager::State::kNone;
  }));
  EXPECT_EQ(manager_->counters().evictions, 1);
  int64_t total = 0;
  for (const auto& r : manager_->Reports()) total += r.memory_kb;
  EXPECT_LE(total, o.memory_budget_mb * 1024);
}

TEST_F(TemplateManagerTest, SnapshotsEvictedWithinTheDiskBudget) {
  TemplateOptions o;
  o.disk_budget_mb = 1;
  SizedSnapshotter snap(700 << 10);  // two do not fit in 1 MB
  MakeManager(&snap, o);
  const std::string a = TemplateManager::Key("a", 1), b = TemplateManager::Key("b", 1);
  manager_->Ensure(a, "a", 1, Worker("a"));
  ASSERT_TRUE(StepUntil([&] { return manager_->HasSnapshot(a); }));
  manager_->Ensure(b, "b", 1, Worker("b"));
  ASSERT_TRUE(StepUntil([&] { return manager_->HasSnapshot(b) && !manager_->HasSnapshot(a); }));
  EXPECT_FALSE(fs::exists(dir_ + "/templates/" + a));
  EXPECT_GE(manager_->counters().evictions, 1);
}

TEST_F(TemplateManagerTest, HostShortOfMemoryOrDiskEvictsTemplatesAndSnapshots) {
  std::atomic<int64_t> available_kb{int64_t{1} << 30}, free_kb{int64_t{1} << 30};
  TemplateOptions o;
  o.min_available_memory_mb = 512;
  o.min_free_disk_mb = 512;
  SizedSnapshotter snap(1 << 20);
  HostProbe probe{[](int) { return int64_t{100} << 10; }, [&] { return available_kb.load(); },
                  [&](const std::string&) { return free_kb.load(); }};
  MakeManager(&snap, o, probe);
  const std::string a = TemplateManager::Key("a", 1);
  manager_->Ensure(a, "a", 1, Worker("a"));
  ASSERT_TRUE(StepUntil([&] { return manager_->HasSnapshot(a); }));
  ASSERT_TRUE(Ready(a));
  free_kb = 100 << 10;  // 100 MB free: the snapshot goes, the template stays
  ASSERT_TRUE(StepUntil([&] { return !manager_->HasSnapshot(a); }));
  EXPECT_EQ(manager_->Get(a), TemplateManager::State::kReady);
  available_kb = 300 << 10;  // 300 MB available: the template goes too
  ASSERT_TRUE(StepUntil([&] { return manager_->Get(a) == TemplateManager::State::kNone; }));
  EXPECT_EQ(manager_->counters().evictions, 2);
}

// The real CRIU: a template checkpointed by one "agent" is restored by the next one.
class CriuTemplateTest : public TemplateManagerTest,
                         public ::testing::WithParamInterface<RestoreMode> {};

TEST_P(CriuTemplateTest, SnapshotRestoredAfterAgentRestart) {
  auto criu = FindCriu();
  ASSERT_TRUE(criu.ok()) << criu.status().message() << " (run scripts/setup.sh)";
  auto snap = NewCriuSnapshotter(*criu);
  TemplateOptions o;
  o.restore_mode = GetParam();
  MakeManager(snap.get(), o);
  const std::string key = TemplateManager::Key("ep", 7);
  manager_->Ensure(key, "ep", 7, Worker("first"));
  ASSERT_TRUE(StepUntil([&] { return manager_->HasSnapshot(key); }, 60'000));
  ASSERT_TRUE(Ready(key));
  const int old_pid = TemplatePid();

  // The agent goes away: its template dies with it (the runtime kills its children).
  manager_.reset();
  runtime_.reset();
  ASSERT_NE(kill(old_pid, 0), 0);

  runtime_ = NewLocalProcessRuntime(&clock_, {});
  MakeManager(snap.get(), o);
  ASSERT_TRUE(manager_->HasSnapshot(key));
  manager_->RestoreAll();
  EXPECT_EQ(manager_->Get(key), TemplateManager::State::kBusy);
  ASSERT_TRUE(Ready(key));
  EXPECT_EQ(manager_->counters().restores, 1);
  EXPECT_EQ(TemplatePid(), old_pid);  // CRIU restores the pid it had
  ProcessSpec a = Worker("after-restore", "5");
  auto pa = manager_->Fork(key, a);
  ASSERT_TRUE(pa.ok()) << pa.status().ToString();
  EXPECT_EQ(ParentOf(*pa), getpid());
  // The forked worker runs (it keeps trying its job-take URL), and the template is alive.
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  EXPECT_EQ(kill(*pa, 0), 0);
  EXPECT_EQ(manager_->Get(key), TemplateManager::State::kReady);
}

INSTANTIATE_TEST_SUITE_P(Modes, CriuTemplateTest,
                         ::testing::Values(RestoreMode::kFull, RestoreMode::kLazy),
                         [](const auto& info) {
                           return info.param == RestoreMode::kFull ? "Full" : "Lazy";
                         });

}  // namespace
}  // namespace gantry::agent
