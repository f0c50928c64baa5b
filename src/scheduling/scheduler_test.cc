#include "scheduling/scheduler.h"

#include <gtest/gtest.h>

namespace gantry::scheduling {
namespace {

json::value J(const std::string& s) { return *ParseJson(s); }

constexpr auto kRunning = protocol::WorkerRunState::kRunning;
constexpr auto kExited = protocol::WorkerRunState::kExited;

// A status that reports these workers and nothing else.
NodeStatus Workers(std::vector<WorkerReport> reports) {
  NodeStatus s;
  s.workers = std::move(reports);
  return s;
}

class SchedulerTest : public ::testing::Test {
 protected:
  SchedulerTest()
      : jobs_(&clock_, &store_, {}, [](auto&&...) {}),
        endpoints_(&clock_, &store_, &jobs_),
        workers_(&clock_, &store_, &jobs_, WorkerOptions{}),
        sched_(&clock_, &jobs_, &endpoints_, &workers_, SchedulerOptions{}, &worker_env_) {}

  void Endpoint(const std::string& json) { ASSERT_TRUE(endpoints_.Create(J(json), {}).ok()); }

  std::string Submit(const std::string& ep) {
    jobs::SubmitRequest r;
    r.endpoint_id = ep;
    r.input = "{}";
    return (*jobs_.Submit(r, {}))->rec.id;
  }

  Assignment Poll(const std::string& node) {
    Assignment out;
    sched_.PollAssignment(node, -1, 0, [&](const Assignment* a) {
      ASSERT_NE(a, nullptr);
      out = *a;
    });
    return out;
  }

  // The worker process started and asked for work: it is ready and takes what is queued.
  void BecomeReady(const std::string& worker_id, const std::string& ep) {
    WorkerInfo* w = workers_.Get(worker_id);
    workers_.Seen(w, true);
    jobs_.Take(ep, worker_id, 1, 0, [](auto) {});
  }

  FakeClock clock_;
  WorkerEnvFactory worker_env_{"http://gantry.test:8000", 10'000};
  store::MemoryStore store_;
  jobs::JobManager jobs_;
  EndpointRegistry endpoints_;
  WorkerRegistry workers_;
  Scheduler sched_;
};

TEST_F(SchedulerTest, AssignmentNamesTheEndpointVersionsWhoseTemplatesToKeep) {
  ASSERT_TRUE(sched_.RegisterNode("n1", {"n1", 2, 8192, {}}).ok());
  Endpoint(R"({"id":"a","worker":{"command":["x"]}})");
  Endpoint(R"({"id":"b","flashboot":false,"worker":{"command":["x"]}})");
  sched_.Tick();
  EXPECT_EQ(Poll("n1").template_versions, (std::map<std::string, int64_t>{{"a", 1}}));
  ASSERT_TRUE(endpoints_.Update("a", J(R"({"env":{"X":"1"}})"), {}).ok());
  sched_.Tick();
  EXPECT_EQ(Poll("n1").template_versions, (std::map<std::string, int64_t>{{"a", 2}}));
  ASSERT_TRUE(endpoints_.Delete("a", {}).ok());
  sched_.Tick();
  EXPECT_TRUE(Poll("n1").template_versions.empty());
}

// Images are pulled on the nodes that could run them as soon as they are deployed; the nodes'
// reports of those pulls are what `gantry deploy --image` follows.
TEST_F(SchedulerTest, AssignmentListsTheImagesANodeCouldRunAndReportsTheirPulls) {
  ASSERT_TRUE(sched_.RegisterNode("cpu", {"cpu", 2, 8192, {}}).ok());
  ASSERT_TRUE(sched_.RegisterNode("gpu", {"gpu", 8, 1 << 20, {{0, "NVIDIA H100 80GB", "u"}}}).ok());
  Endpoint(R"({"id":"a","image":"reg/a:1","registryAuth":{"username":"u","password":"p"}})");
  Endpoint(R"({"id":"a2","image":"reg/a:1"})");  // the same image: listed once
  Endpoint(R"({"id":"g","image":"reg/g:1","gpuTypeIds":["H100"]})");
  Endpoint(R"({"id":"two","image":"reg/two:1","gpuTypeIds":["H100"],"gpuCount":2})");
  Endpoint(R"({"id":"code","worker":{"command":["x"]}})");
  sched_.Tick();
  auto images = [&](const std::string& node) {
    std::vector<std::string> v;
    for (const auto& i : Poll(node).images) v.push_back(i.image);
    return v;
  };
  EXPECT_EQ(images("cpu"), (std::vector<std::string>{"reg/a:1"}));
  EXPECT_EQ(images("gpu"), (std::vector<std::string>{"reg/a:1", "reg/g:1"}));
  EXPECT_EQ(Poll("cpu").images[0].generation, "a:1,a2:1");
  EXPECT_EQ(Poll("cpu").images[0].registry_username, "u");
  EXPECT_EQ(Poll("cpu").images[0].registry_password, "p");
  // Before a node reports on a pull it is queued; then as the node reported it.
  auto states = [&](const std::string& image) {
    std::vector<std::string> v;
    for (const auto& p : sched_.ImagePulls(image)) {
      v.push_back(std::string(p.as_object().at("nodeId").as_string()) + " " +
                  std::string(p.as_object().at("state").as_string()));
    }
    return v;
  };
  EXPECT_EQ(states("reg/a:1"), (std::vector<std::string>{"cpu queued", "gpu queued"}));
  NodeStatus status;
  status.images = std::vector<protocol::ImagePullReport>{
      {"reg/a:1", "", protocol::PullState::kPulling, "copying blob sha256:aa", 5}};
  ASSERT_TRUE(sched_.Report("cpu", status, {}).ok());
  // A report without this deploy's generation is an earlier pull's: still queued.
  EXPECT_EQ(states("reg/a:1"), (std::vector<std::string>{"cpu queued", "gpu queued"}));
  (*status.images)[0].generation = "a:1,a2:1";
  ASSERT_TRUE(sched_.Report("cpu", status, {}).ok());
  EXPECT_EQ(states("reg/a:1"), (std::vector<std::string>{"cpu pulling", "gpu queued"}));
  EXPECT_EQ(sched_.ImagePulls("reg/a:1")[0].as_object().at("detail").as_string(),
            "copying blob sha256:aa");
  EXPECT_TRUE(states("reg/two:1").empty());  // no node has two H100s
  // A redeploy of a2 is a new generation of its image.
  ASSERT_TRUE(endpoints_.Update("a2", J(R"({"env":{"X":"1"}})"), {}).ok());
  sched_.Tick();
  EXPECT_EQ(Poll("cpu").images[0].generation, "a:1,a2:2");
  EXPECT_EQ(states("reg/a:1"), (std::vector<std::string>{"cpu queued", "gpu queued"}));
  // A deleted endpoint's image is dropped (the agent then cancels its pull).
  ASSERT_TRUE(endpoints_.Delete("g", {}).ok());
  sched_.Tick();
  EXPECT_EQ(images("gpu"), (std::vector<std::string>{"reg/a:1"}));
}

// A deploy changes every node's assignment at once, not at the next Tick: `gantry deploy`
// follows the pull of the generation it made, and must never read the one before it.
TEST_F(SchedulerTest, EndpointChangesReachTheAssignmentsAtOnce) {
  ASSERT_TRUE(sched_.RegisterNode("n1", {"n1", 2, 8192, {}}).ok());
  Endpoint(R"({"id":"a","image":"reg/a:1"})");
  ASSERT_EQ(Poll("n1").images.size(), 1u);
  EXPECT_EQ(Poll("n1").images[0].generation, "a:1");
  EXPECT_EQ(Poll("n1").template_versions, (std::map<std::string, int64_t>{{"a", 1}}));
  ASSERT_TRUE(endpoints_.Update("a", J(R"({"env":{"X":"1"}})"), {}).ok());
  EXPECT_EQ(Poll("n1").images[0].generation, "a:2");
  ASSERT_TRUE(endpoints_.Delete("a", {}).ok());
  EXPECT_TRUE(Poll("n1").images.empty());
  EXPECT_TRUE(Poll("n1").template_versions.empty());
}

TEST_F(SchedulerTest, WorkerWhoseSecretARestartLostIsNoFailedStart) {
  ASSERT_TRUE(sched_.RegisterNode("n1", {"n1", 2, 8192, {}}).ok());
  Endpoint(R"({"id":"echo","worker":{"command":["x"]}})");
  Submit("echo");
  Assignment a = Poll("n1");
  ASSERT_EQ(a.workers.size(), 1u);
  const std::string wid = a.workers[0].worker_id;
  workers_.Get(wid)->secret.clear();  // as after a restart of the server
  ASSERT_TRUE(
      sched_
          .Report("n1", Workers({{wid, kExited, 1, 0, -1, "no environment in the assignment"}}), {})
          .ok());
  EXPECT_EQ(workers_.Get(wid)->state, WorkerState::kStopped);
  EXPECT_EQ(sched_.Health("echo").consecutive_failures, 0);
  EXPECT_FALSE(sched_.Health("echo").unhealthy);
}

TEST_F(SchedulerTest, ScaleFromZeroRunsAndScalesBackToZero) {
  ASSERT_TRUE(sched_.RegisterNode("n1", {"n1", 2, 8192, {}}).ok());
  Endpoint(R"({"id":"echo","idleTimeout":5,"worker":{"command":["python3","h.py"]}})");
  EXPECT_TRUE(Poll("n1").workers.empty());
  std::string job = Submit("echo");  // event-driven: placed at once, no tick needed
  Assignment a = Poll("n1");
  ASSERT_EQ(a.workers.size(), 1u);
  const WorkerAssignment& wa = a.workers[0];
  EXPECT_EQ(wa.command, (std::vector<std::string>{"python3", "h.py"}));
  EXPECT_EQ(wa.env.at("RUNPOD_POD_ID"), wa.worker_id);
  EXPECT_FALSE(wa.env.at("RUNPOD_AI_API_KEY").empty());
  EXPECT_EQ(wa.gpu_type, "cpu");
  // The agent reports the phases; the worker becomes ready and runs the job.
  ASSERT_TRUE(
      sched_
          .Report("n1", Workers({{wa.worker_id, kRunning, clock_.NowMs(), clock_.NowMs() + 3}}), {})
          .ok());
  BecomeReady(wa.worker_id, "echo");
  EXPECT_EQ(jobs_.Get(job)->status, jobs::JobStatus::kInProgress);
  ASSERT_TRUE(jobs_.Finish(wa.worker_id, job, J(R"({"output":1})"), false, {}).ok());
  clock_.Advance(4'999);
  sched_.Tick();
  EXPECT_EQ(Poll("n1").workers.size(), 1u);
  clock_.Advance(1);
  sched_.Tick();
  EXPECT_TRUE(Poll("n1").workers.empty());                 // the agent stops it
  ASSERT_TRUE(sched_.Report("n1", Workers({}), {}).ok());  // its process is gone
  EXPECT_EQ(workers_.Get(wa.worker_id)->state, WorkerState::kStopped);
  EXPECT_GT(workers_.Get(wa.worker_id)->spawned_ms, 0);
}

// The order of a normal stop (docs/decisions.md): off the assignment first (the agent sends
// SIGTERM), the key valid and job-take empty meanwhile, STOPPED once the agent reports the
// process gone; no error anywhere.
TEST_F(SchedulerTest, IdleStopIsNoErrorAndKeepsTheKeyUntilTheAgentReportsTheExit) {
  ASSERT_TRUE(sched_.RegisterNode("n1", {"n1", 2, 8192, {}}).ok());
  Endpoint(R"({"id":"echo","idleTimeout":5,"worker":{"command":["x"]}})");
  std::string job = Submit("echo");
  const WorkerAssignment wa = Poll("n1").workers.at(0);
  const std::string key = wa.env.at("RUNPOD_AI_API_KEY");
  ASSERT_TRUE(sched_.Report("n1", Workers({{wa.worker_id, kRunning, 1, 2}}), {}).ok());
  BecomeReady(wa.worker_id, "echo");
  ASSERT_TRUE(jobs_.Finish(wa.worker_id, job, J(R"({"output":1})"), false, {}).ok());
  clock_.Advance(5'000);
  sched_.Tick();
  EXPECT_TRUE(Poll("n1").workers.empty());
  WorkerInfo* w = workers_.Get(wa.worker_id);
  EXPECT_TRUE(workers_.Authenticate("echo", wa.worker_id, key).ok());
  EXPECT_TRUE(w->draining);
  EXPECT_GT(w->stopping_ms, 0);
  // The agent has not acted yet, then its SIGTERM is under way: still running.
  ASSERT_TRUE(sched_.Report("n1", Workers({{wa.worker_id, kRunning, 1, 2}}), {}).ok());
  sched_.Tick();
  EXPECT_NE(w->state, WorkerState::kStopped);
  EXPECT_TRUE(Poll("n1").workers.empty());  // and never placed again
  // SIGTERM ended it (the agent reports the exit once, or simply stops listing it).
  ASSERT_TRUE(sched_.Report("n1", Workers({{wa.worker_id, kExited, 1, 2, 0, ""}}), {}).ok());
  EXPECT_EQ(w->state, WorkerState::kStopped);
  EXPECT_EQ(w->last_error, "");
  EXPECT_EQ(w->stop_reason, "idle for 5 s");
  EXPECT_EQ(workers_.Authenticate("echo", wa.worker_id, key).status().code(),
            Code::kUnauthenticated);
  EXPECT_EQ(sched_.Health("echo").last_error, "");
  EXPECT_EQ(sched_.Health("echo").consecutive_failures, 0);
}

TEST_F(SchedulerTest, CrashStillSetsTheLastError) {
  ASSERT_TRUE(sched_.RegisterNode("n1", {"n1", 2, 8192, {}}).ok());
  Endpoint(R"({"id":"c","worker":{"command":["x"]}})");
  Submit("c");
  std::string wid = Poll("n1").workers.at(0).worker_id;
  BecomeReady(wid, "c");
  ASSERT_TRUE(
      sched_.Report("n1", Workers({{wid, kExited, 1, 2, -1, "killed by signal 9"}}), {}).ok());
  EXPECT_EQ(workers_.Get(wid)->state, WorkerState::kStopped);
  EXPECT_EQ(workers_.Get(wid)->last_error, "killed by signal 9");
  EXPECT_NE(sched_.Health("c").last_error.find("killed by signal 9"), std::string::npos);
}

TEST_F(SchedulerTest, BurstNeverExceedsWorkersMax) {
  ASSERT_TRUE(sched_.RegisterNode("n1", {"n1", 2, 1 << 20, {}}).ok());
  Endpoint(R"({"id":"b","workersMax":3,"scalerType":"REQUEST_COUNT","scalerValue":1,
               "worker":{"command":["x"]}})");
  for (int i = 0; i < 200; ++i) Submit("b");
  sched_.Tick();
  EXPECT_EQ(Poll("n1").workers.size(), 3u);
}

TEST_F(SchedulerTest, NothingFitsMeansThrottledAndJobsWait) {
  ASSERT_TRUE(sched_.RegisterNode("n1", {"n1", 2, 8192, {{0, "A100-80GB", "u0"}}}).ok());
  Endpoint(R"({"id":"g","gpuTypeIds":["H100"],"worker":{"command":["x"]}})");
  std::string job = Submit("g");
  EXPECT_TRUE(Poll("n1").workers.empty());
  EXPECT_EQ(sched_.Health("g").throttled, 1);
  EXPECT_EQ(jobs_.Get(job)->status, jobs::JobStatus::kInQueue);
}

TEST_F(SchedulerTest, NoGpuIsGivenToTwoWorkers) {
  ASSERT_TRUE(
      sched_.RegisterNode("n1", {"n1", 8, 1 << 20, {{0, "H100", "a"}, {1, "H100", "b"}}}).ok());
  Endpoint(R"({"id":"g","gpuTypeIds":["H100"],"workersMax":5,"scalerType":"REQUEST_COUNT",
               "scalerValue":1,"worker":{"command":["x"]}})");
  for (int i = 0; i < 5; ++i) Submit("g");
  Assignment a = Poll("n1");
  ASSERT_EQ(a.workers.size(), 2u);  // two GPUs, one each; the rest are throttled
  EXPECT_NE(a.workers[0].gpus, a.workers[1].gpus);
  EXPECT_EQ(sched_.Health("g").throttled, 3);
}

TEST_F(SchedulerTest, FailedStartsBackOffAndMakeTheEndpointUnhealthy) {
  ASSERT_TRUE(sched_.RegisterNode("n1", {"n1", 2, 8192, {}}).ok());
  Endpoint(R"({"id":"bad","worker":{"command":["false"]}})");
  Submit("bad");
  for (int i = 0; i < 3; ++i) {
    Assignment a = Poll("n1");
    ASSERT_EQ(a.workers.size(), 1u) << "attempt " << i;
    std::string wid = a.workers[0].worker_id;
    ASSERT_TRUE(sched_
                    .Report("n1", Workers({{wid, kExited, 1, 2, 1, ""}}),
                            {{wid, {"Traceback", "ImportError: no module x"}}})
                    .ok());
    EXPECT_TRUE(Poll("n1").workers.empty());
    sched_.Tick();  // within the backoff: no new start
    EXPECT_TRUE(Poll("n1").workers.empty());
    clock_.Advance(1000LL << i);
    sched_.Tick();
  }
  const EndpointHealth& h = sched_.Health("bad");
  EXPECT_TRUE(h.unhealthy);
  EXPECT_EQ(h.consecutive_failures, 3);
  EXPECT_NE(h.last_error.find("failed to start"), std::string::npos);
  EXPECT_EQ(h.last_log.back(), "ImportError: no module x");
}

// Fail fast: once its workers failed to start maxFailedStarts times in a row, an endpoint's
// queued jobs fail with the worker's error and log instead of waiting; a new version starts
// the count afresh.
TEST_F(SchedulerTest, QueuedJobsFailWithTheCauseAfterMaxFailedStarts) {
  ASSERT_TRUE(sched_.RegisterNode("n1", {"n1", 2, 8192, {}}).ok());
  Endpoint(R"({"id":"bad","maxFailedStarts":2,"worker":{"command":["false"]}})");
  std::string job = Submit("bad");
  auto fail_start = [&](const std::vector<std::string>& tail) {
    Assignment a = Poll("n1");
    ASSERT_EQ(a.workers.size(), 1u);
    std::string wid = a.workers[0].worker_id;
    ASSERT_TRUE(sched_.Report("n1", Workers({{wid, kExited, 1, 2, 1, ""}}), {{wid, tail}}).ok());
    clock_.Advance(5'000);  // past the backoff (1 s, then 2 s), not the node's liveness (15 s)
    sched_.Tick();
  };
  fail_start({"Traceback (most recent call last):", "SyntaxError: invalid syntax"});
  EXPECT_EQ(jobs_.Get(job)->status, jobs::JobStatus::kInQueue);  // one failure: it waits
  EXPECT_FALSE(sched_.Health("bad").unhealthy);
  fail_start({"Traceback (most recent call last):", "SyntaxError: invalid syntax"});
  ASSERT_EQ(jobs_.Get(job)->status, jobs::JobStatus::kFailed);
  const std::string& error = jobs_.Get(job)->rec.error;
  EXPECT_NE(error.find("failed to start: exited with code 1"), std::string::npos) << error;
  EXPECT_NE(error.find("2 failed starts in a row"), std::string::npos) << error;
  EXPECT_NE(error.find("\\nSyntaxError: invalid syntax"), std::string::npos) << error;
  EXPECT_TRUE(sched_.Health("bad").unhealthy);
  // A fix, deployed: the count starts again (one failure no longer fails a job).
  ASSERT_TRUE(endpoints_.Update("bad", J(R"({"env":{"FIXED":"1"}})"), {}).ok());
  EXPECT_FALSE(sched_.Health("bad").unhealthy);
  EXPECT_EQ(sched_.Health("bad").consecutive_failures, 0);
  std::string next = Submit("bad");
  fail_start({"still broken"});
  EXPECT_EQ(jobs_.Get(next)->status, jobs::JobStatus::kInQueue);
}

TEST_F(SchedulerTest, MaxFailedStartsZeroKeepsJobsQueuedButTheEndpointIsUnhealthy) {
  ASSERT_TRUE(sched_.RegisterNode("n1", {"n1", 2, 8192, {}}).ok());
  Endpoint(R"({"id":"keep","maxFailedStarts":0,"worker":{"command":["false"]}})");
  std::string job = Submit("keep");
  for (int i = 0; i < 4; ++i) {
    Assignment a = Poll("n1");
    ASSERT_EQ(a.workers.size(), 1u) << i;
    std::string wid = a.workers[0].worker_id;
    ASSERT_TRUE(sched_.Report("n1", Workers({{wid, kExited, 1, 2, 1, ""}}), {}).ok());
    EXPECT_EQ(sched_.Health("keep").unhealthy, i >= 2) << i;
    clock_.Advance(9'000);  // past the backoff (up to 8 s), not the node's liveness (15 s)
    ASSERT_TRUE(sched_.Report("n1", Workers({}), {}).ok());
    sched_.Tick();
  }
  EXPECT_EQ(jobs_.Get(job)->status, jobs::JobStatus::kInQueue);
}

TEST_F(SchedulerTest, NoNodeYetIsUnplaceableOnlyWhenAsked) {
  Endpoint(R"({"id":"c","worker":{"command":["x"]}})");
  EXPECT_NE(sched_.Unplaceable("c").find("no live node is registered"), std::string::npos);
  EXPECT_EQ(sched_.Unplaceable("c", /*live_nodes_only=*/true), "");  // one may be registering
}

TEST_F(SchedulerTest, UnplaceableSaysWhyNoNodeCouldRunIt) {
  ASSERT_TRUE(sched_.RegisterNode("n1", {"n1", 2, 8192, {}}).ok());
  Endpoint(R"({"id":"g","gpuTypeIds":["H100","A100-80GB"],"worker":{"command":["x"]}})");
  Endpoint(R"({"id":"c","worker":{"command":["x"]}})");
  Endpoint(R"({"id":"byhand"})");
  EXPECT_EQ(sched_.Unplaceable("g"),
            "no live node has a GPU of type H100 or A100-80GB (n1: no GPUs)");
  EXPECT_EQ(sched_.Unplaceable("c"), "");
  EXPECT_EQ(sched_.Unplaceable("byhand"), "");  // its workers are started by hand
  EXPECT_EQ(sched_.Unplaceable("nope"), "");
  EXPECT_EQ(sched_.Unplaceable("g", /*live_nodes_only=*/true),
            "no live node has a GPU of type H100 or A100-80GB (n1: no GPUs)");
  ASSERT_TRUE(
      sched_.RegisterNode("n2", {"n2", 8, 1 << 20, {{0, "NVIDIA A100-80GB PCIe", "u"}}}).ok());
  EXPECT_EQ(sched_.Unplaceable("g"), "");
}

TEST_F(SchedulerTest, RecycledWorkerExitIsNotAFailure) {
  ASSERT_TRUE(sched_.RegisterNode("n1", {"n1", 2, 8192, {}}).ok());
  Endpoint(R"({"id":"r","worker":{"command":["x"]}})");
  std::string job = Submit("r");
  std::string wid = Poll("n1").workers[0].worker_id;
  BecomeReady(wid, "r");
  ASSERT_TRUE(jobs_.Finish(wid, job, J(R"({"output":1,"stopPod":true})"), false, {}).ok());
  workers_.MarkRecycle(wid);  // as the API does for stopPod
  ASSERT_TRUE(sched_.Report("n1", Workers({{wid, kExited, 1, 2, 0, ""}}), {}).ok());
  EXPECT_EQ(workers_.Get(wid)->state, WorkerState::kStopped);
  EXPECT_EQ(workers_.Get(wid)->last_error, "");
  EXPECT_EQ(sched_.Health("r").consecutive_failures, 0);
  EXPECT_TRUE(sched_.Health("r").last_error.empty());
}

TEST_F(SchedulerTest, NewVersionDrainsOldWorkers) {
  ASSERT_TRUE(sched_.RegisterNode("n1", {"n1", 2, 1 << 20, {}}).ok());
  Endpoint(R"({"id":"v","worker":{"command":["x"]}})");
  std::string j1 = Submit("v");
  std::string old_id = Poll("n1").workers[0].worker_id;
  BecomeReady(old_id, "v");
  ASSERT_TRUE(endpoints_.Update("v", J(R"({"worker":{"command":["y"]}})"), {}).ok());
  Submit("v");
  sched_.Tick();
  Assignment a = Poll("n1");
  ASSERT_EQ(a.workers.size(), 2u);  // the old one finishes its job; a new one takes the rest
  EXPECT_TRUE(workers_.Get(old_id)->draining);
  ASSERT_TRUE(jobs_.Finish(old_id, j1, J(R"({"output":1})"), false, {}).ok());
  sched_.Tick();
  a = Poll("n1");
  ASSERT_EQ(a.workers.size(), 1u);
  EXPECT_NE(a.workers[0].worker_id, old_id);
  EXPECT_EQ(a.workers[0].command, std::vector<std::string>{"y"});
  EXPECT_EQ(workers_.Get(old_id)->stop_reason, "drained after a new version");
  EXPECT_EQ(workers_.Get(old_id)->last_error, "");
}

TEST_F(SchedulerTest, SilentNodeLosesItsWorkers) {
  ASSERT_TRUE(sched_.RegisterNode("n1", {"n1", 2, 8192, {}}).ok());
  Endpoint(R"({"id":"e","worker":{"command":["x"]}})");
  Submit("e");
  std::string wid = Poll("n1").workers[0].worker_id;
  clock_.Advance(SchedulerOptions{}.node_lost_ms + 1);
  sched_.Tick();
  EXPECT_EQ(workers_.Get(wid)->state, WorkerState::kStopped);
}

TEST_F(SchedulerTest, AssignmentLongPollWakesOnChange) {
  ASSERT_TRUE(sched_.RegisterNode("n1", {"n1", 2, 8192, {}}).ok());
  Endpoint(R"({"id":"e","worker":{"command":["x"]}})");
  int64_t v = Poll("n1").version;
  const Assignment* got = nullptr;
  sched_.PollAssignment("n1", v, 30'000, [&](const Assignment* a) { got = a; });
  EXPECT_EQ(got, nullptr);
  Submit("e");
  ASSERT_NE(got, nullptr);
  EXPECT_EQ(got->workers.size(), 1u);
  bool unknown = false;
  sched_.PollAssignment("zz", 0, 0, [&](const Assignment* a) { unknown = a == nullptr; });
  EXPECT_TRUE(unknown);
}

}  // namespace
}  // namespace gantry::scheduling
