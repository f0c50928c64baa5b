#include "agent/reconciler.h"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <thread>

#include "agent/agent.h"
#include "agent/gpu_inventory.h"
#include "agent/process/fake_process_runtime.h"

namespace gantry::agent {
namespace {

protocol::WorkerAssignment Worker(const std::string& id, std::vector<int> gpus = {}) {
  protocol::WorkerAssignment a;
  a.worker_id = id;
  a.endpoint_id = "ep";
  a.command = {"python3", "handler.py"};
  a.env = {{"RUNPOD_POD_ID", id}, {"PYTHONPATH", "/bundle"}};
  a.gpus = std::move(gpus);
  a.memory_mb = 512;
  return a;
}

class ReconcilerTest : public ::testing::Test {
 protected:
  ReconcilerTest() : runtime_(&clock_), rec_(&clock_, &runtime_, {"/sdk", "/work", 5000}) {}
  void Assign(std::vector<protocol::WorkerAssignment> ws) {
    rec_.SetAssignment({++version_, std::move(ws)});
  }
  FakeClock clock_;
  FakeProcessRuntime runtime_;
  Reconciler rec_;
  int64_t version_ = 0;
};

TEST_F(ReconcilerTest, StartsAssignedWorkersWithTheirIdentityAndGpus) {
  Assign({Worker("w1", {2, 3}), Worker("w2")});
  EXPECT_TRUE(rec_.Step());
  auto starts = runtime_.starts();
  ASSERT_EQ(starts.size(), 2u);
  EXPECT_EQ(starts[0].id, "w1");
  EXPECT_EQ(starts[0].argv, (std::vector<std::string>{"python3", "handler.py"}));
  EXPECT_EQ(starts[0].workdir, "/work");
  EXPECT_EQ(starts[0].memory_mb, 512);
  EXPECT_EQ(starts[0].pids_max, 4096);  // a fork bomb stops there
  EXPECT_EQ(starts[0].uid, -1);         // no sandbox given: the agent's user
  EXPECT_EQ(starts[0].env.at("RUNPOD_POD_ID"), "w1");
  EXPECT_EQ(starts[0].env.at("CUDA_VISIBLE_DEVICES"), "2,3");
  EXPECT_EQ(starts[0].env.at("NVIDIA_VISIBLE_DEVICES"), "2,3");
  EXPECT_EQ(starts[0].env.at("PYTHONPATH"), "/bundle:/sdk");  // the bundle's own comes first
  EXPECT_EQ(starts[1].env.at("CUDA_VISIBLE_DEVICES"), "");
  EXPECT_EQ(starts[1].env.at("NVIDIA_VISIBLE_DEVICES"), "void");
  auto reports = rec_.Reports();
  ASSERT_EQ(reports.size(), 2u);
  EXPECT_EQ(reports[0].state, protocol::WorkerRunState::kRunning);
  EXPECT_GT(reports[0].spawned_ms, 0);
  // A second step with the same assignment starts nothing more: no duplicates.
  EXPECT_FALSE(rec_.Step());
  EXPECT_EQ(runtime_.starts().size(), 2u);
}

TEST(ReconcilerSandboxTest, WorkersRunAsTheirEndpointsUserInTheirScratchDirectory) {
  if (geteuid() != 0) GTEST_SKIP() << "users of their own only as root";
  namespace fs = std::filesystem;
  const fs::path base = fs::temp_directory_path() / ("gantry-rec-" + NewId("", 8));
  fs::create_directories(base / "state");
  chmod(base.c_str(), 0755);
  SandboxOptions o;
  o.dir = (base / "workers").string();
  o.state_dir = (base / "state").string();
  o.uid_first = 300'100;
  o.root = true;
  auto sandbox = WorkerSandbox::Open(o);
  ASSERT_TRUE(sandbox.ok()) << sandbox.status().ToString();
  FakeClock clock;
  FakeProcessRuntime runtime(&clock);
  Reconciler rec(&clock, &runtime, {"/sdk", "/work", 5000}, nullptr, nullptr, nullptr,
                 sandbox->get());
  auto other = Worker("w2");
  other.endpoint_id = "other";
  rec.SetAssignment({1, {Worker("w1"), other}});
  rec.Step();
  auto starts = runtime.starts();
  ASSERT_EQ(starts.size(), 2u);
  EXPECT_EQ(starts[0].uid, 300'100);
  EXPECT_EQ(starts[0].gid, 300'100);
  EXPECT_EQ(starts[1].uid, 300'101);
  const std::string scratch = o.dir + "/300100/scratch/w1";
  EXPECT_EQ(starts[0].workdir, scratch);  // not the agent's /work
  EXPECT_EQ(starts[0].env.at("HOME"), scratch);
  EXPECT_TRUE(fs::is_directory(scratch));
  // Its scratch directory goes with it.
  runtime.Exit("w1", 0);
  rec.Step();
  EXPECT_FALSE(fs::exists(scratch));
  fs::remove_all(base);
}

TEST_F(ReconcilerTest, BundleThatBringsItsOwnSdkKeepsOursOffThePath) {
  namespace fs = std::filesystem;
  fs::path root = fs::temp_directory_path() / ("gantry-bundle-" + NewId("", 8));
  fs::create_directories(root);
  auto w = Worker("w1");
  w.env.erase("PYTHONPATH");
  EXPECT_EQ(rec_.WorkerEnvironment(w, root.string()).at("PYTHONPATH"), "/sdk");
  fs::create_directories(root / "runpod");  // the bundle vendors runpod's SDK
  EXPECT_EQ(rec_.WorkerEnvironment(w, root.string()).count("PYTHONPATH"), 0u);
  fs::remove_all(root);
}

TEST_F(ReconcilerTest, StopsWorkersNoLongerAssignedWithTheGracePeriod) {
  Assign({Worker("w1"), Worker("w2")});
  rec_.Step();
  Assign({Worker("w2")});
  rec_.Step();
  auto stops = runtime_.stops();
  ASSERT_EQ(stops.size(), 1u);
  EXPECT_EQ(stops[0].id, "w1");
  EXPECT_EQ(stops[0].grace_ms, 5000);
  rec_.Step();  // the fake honours SIGTERM: w1 is reaped and forgotten
  auto reports = rec_.Reports();
  ASSERT_EQ(reports.size(), 1u);
  EXPECT_EQ(reports[0].worker_id, "w2");
}

TEST_F(ReconcilerTest, ReportsCrashesOomAndStartFailures) {
  Assign({Worker("w1"), Worker("w2")});
  rec_.Step();
  runtime_.Exit("w1", 3);
  runtime_.Kill("w2", 9, /*oom_killed=*/true);
  EXPECT_TRUE(rec_.Step());
  auto reports = rec_.Reports();
  EXPECT_EQ(reports[0].state, protocol::WorkerRunState::kExited);
  EXPECT_EQ(reports[0].exit_code, 3);
  EXPECT_NE(reports[1].error.find("memory limit (512 MB)"), std::string::npos);
  // An exited worker is not restarted by the agent: the server decides (with backoff).
  rec_.Step();
  EXPECT_EQ(runtime_.starts().size(), 2u);

  runtime_.FailNextStart(NotFound("no such program: python3"));
  Assign({Worker("w3")});
  rec_.Step();
  reports = rec_.Reports();
  ASSERT_EQ(reports.size(), 1u);
  EXPECT_EQ(reports[0].state, protocol::WorkerRunState::kExited);
  EXPECT_NE(reports[0].error.find("no such program"), std::string::npos);
}

TEST_F(ReconcilerTest, AssignmentWithoutEnvironmentIsReportedNotStarted) {
  auto w = Worker("w1");
  w.env.clear();
  Assign({w});
  rec_.Step();
  EXPECT_TRUE(runtime_.starts().empty());
  EXPECT_EQ(rec_.Reports()[0].state, protocol::WorkerRunState::kExited);
}

TEST(GpuInventoryTest, FakeGpusParse) {
  auto g = ParseFakeGpus("H100:2,A100-80GB:1");
  ASSERT_TRUE(g.ok());
  ASSERT_EQ(g->size(), 3u);
  EXPECT_EQ((*g)[2].type, "A100-80GB");
  EXPECT_EQ((*g)[2].index, 2);
  EXPECT_FALSE(ParseFakeGpus("H100:x").ok());
  EXPECT_FALSE(ParseFakeGpus(":2").ok());
  std::string note;
  auto real = DiscoverNvmlGpus(&note);  // no NVML on CI machines: none, and a note why
  if (real.empty()) {
    EXPECT_FALSE(note.empty());
  }
}

// Image tools whose every run waits until it is cancelled (a pull that takes forever).
class HangingImageTools final : public oci::ImageTools {
 public:
  Result<Run> RunTool(Tool, const std::vector<std::string>&, int64_t,
                      const std::atomic<bool>* cancel,
                      const std::function<void(std::string_view)>&) override {
    started = true;
    while (!(cancel && cancel->load())) std::this_thread::sleep_for(std::chrono::milliseconds(2));
    cancelled = true;
    Run r;
    r.exit_code = -1;
    r.cancelled = true;
    return r;
  }
  std::atomic<bool> started{false}, cancelled{false};
};

TEST(ReconcilerImageTest, AWorkerUnassignedDuringItsPullCancelsIt) {
  const std::string dir =
      std::filesystem::temp_directory_path() / ("gantry-rec-image-" + std::to_string(getpid()));
  FakeClock clock;
  FakeProcessRuntime runtime(&clock);
  HangingImageTools tools;
  auto store = oci::ImageStore::Open(dir + "/images", &tools);
  ASSERT_TRUE(store.ok()) << store.status().ToString();
  oci::Containers containers(store->get(), dir + "/containers");
  {
    Reconciler rec(&clock, &runtime, {"/sdk", "/work", 5000}, nullptr, nullptr, &containers);
    protocol::WorkerAssignment a = Worker("w1");
    a.image = "127.0.0.1:5000/team/worker:1";
    rec.SetAssignment({1, {a}});
    rec.Step();  // the pull starts on its own thread; the worker waits for it
    for (int i = 0; i < 500 && !tools.started; ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
    }
    ASSERT_TRUE(tools.started);
    EXPECT_TRUE(rec.waiting());
    EXPECT_TRUE(runtime.starts().empty());
    rec.SetAssignment({2, {}});  // unassigned meanwhile
    rec.Step();
    for (int i = 0; i < 500 && !tools.cancelled; ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
    }
    EXPECT_TRUE(tools.cancelled);
    for (int i = 0; i < 50; ++i) rec.Step();
    EXPECT_TRUE(runtime.starts().empty());
  }
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace gantry::agent
