#include <gtest/gtest.h>

#include "scheduling/registry.h"
#include "scheduling/worker_env.h"

namespace gantry::scheduling {
namespace {

json::value J(const std::string& s) { return *ParseJson(s); }

TEST(EndpointSpecTest, DefaultsFollowRunPod) {
  EndpointSpec s;
  ASSERT_TRUE(ApplySpecPatch(J("{}"), &s).ok());
  EXPECT_EQ(s.workers_min, 0);
  EXPECT_EQ(s.workers_max, 3);
  EXPECT_EQ(s.idle_timeout_s, 5);
  EXPECT_EQ(s.execution_timeout_ms, 600000);
  EXPECT_EQ(s.scaler_type, "QUEUE_DELAY");
  EXPECT_EQ(s.scaler_value, 4);
  EXPECT_EQ(s.max_attempts, 3);
  EXPECT_DOUBLE_EQ(s.cpu, 0.25);
  EXPECT_EQ(s.memory_mb, 1024);
}

TEST(EndpointSpecTest, RejectsBadValuesNamingTheField) {
  struct Case {
    const char* patch;
    const char* field;
  } cases[] = {
      {R"({"workersMax": -1})", "workersMax"},
      {R"({"workersMin": 5, "workersMax": 2})", "workersMin"},
      {R"({"scalerType": "FOO"})", "scalerType"},
      {R"({"executionTimeoutMs": 10})", "executionTimeoutMs"},
      {R"({"gpuTypeIds": []})", "gpuTypeIds"},
      {R"({"gpuTypeIds": [1]})", "gpuTypeIds"},
      {R"({"env": {"A": 1}})", "env.A"},
      {R"({"cpu": 0})", "cpu"},
      {R"({"worker": {"command": "python"}})", "worker.command"},
      {R"({"bogus": 1})", "bogus"},
      {R"({"idleTimeout": "5"})", "idleTimeout"},
  };
  for (const auto& c : cases) {
    EndpointSpec s;
    Status st = ApplySpecPatch(J(c.patch), &s);
    EXPECT_EQ(st.code(), Code::kInvalidArgument) << c.patch;
    EXPECT_NE(st.message().find(c.field), std::string::npos) << st.message();
  }
}

// runpod-protocol.md §2: a worker's identity and the URLs of the worker protocol; every URL but
// the ping one already holds a '?'. The endpoint's env comes first and cannot override them.
TEST(WorkerEnvTest, GivesTheWorkerItsIdentityAndProtocolUrls) {
  EndpointSpec spec;
  ASSERT_TRUE(ApplySpecPatch(*ParseJson(R"({"env":{"A":"1","RUNPOD_POD_ID":"spoof"},
      "worker":{"env":{"B":"2"}},"concurrency":3,"gpuTypeIds":["H100","A100"]})"),
                             &spec)
                  .ok());
  spec.id = "ep";
  WorkerInfo w;
  w.id = "w-1";
  w.gpus = {0, 1};
  auto env = WorkerEnvFactory("http://h:1", 5000).Build(spec, w, "secret");
  EXPECT_EQ(env.at("A"), "1");
  EXPECT_EQ(env.at("B"), "2");
  EXPECT_EQ(env.at("RUNPOD_POD_ID"), "w-1");
  EXPECT_EQ(env.at("RUNPOD_AI_API_KEY"), "secret");
  EXPECT_EQ(env.at("RUNPOD_ENDPOINT_ID"), "ep");
  EXPECT_EQ(env.at("RUNPOD_WEBHOOK_GET_JOB"), "http://h:1/v2/ep/job-take/w-1?gpu=H100");
  EXPECT_EQ(env.at("RUNPOD_WEBHOOK_POST_OUTPUT"), "http://h:1/v2/ep/job-done/w-1/$ID?gpu=H100");
  EXPECT_EQ(env.at("RUNPOD_WEBHOOK_POST_STREAM"), "http://h:1/v2/ep/job-stream/w-1/$ID?gpu=H100");
  EXPECT_EQ(env.at("RUNPOD_WEBHOOK_JOB_STOP"), "http://h:1/v2/ep/job-stop/w-1?gpu=H100");
  EXPECT_EQ(env.at("RUNPOD_WEBHOOK_PING"), "http://h:1/v2/ep/ping/w-1");
  EXPECT_EQ(env.at("RUNPOD_PING_INTERVAL"), "5000");
  EXPECT_EQ(env.at("RUNPOD_CONCURRENCY"), "3");
  EXPECT_EQ(env.at("RUNPOD_GPU_COUNT"), "2");
  w.gpu_type = "A100";  // placed on its second choice
  EXPECT_EQ(WorkerEnvFactory("http://h:1", 5000).Build(spec, w, "s").at("RUNPOD_WEBHOOK_GET_JOB"),
            "http://h:1/v2/ep/job-take/w-1?gpu=A100");
}

TEST(EndpointSpecTest, RoundTripsThroughJson) {
  EndpointSpec s;
  ASSERT_TRUE(ApplySpecPatch(J(R"({"name":"n","gpuTypeIds":["H100","A100-80GB"],"gpuCount":2,
      "env":{"A":"1"},"concurrency":4,"cpu":1.5,"worker":{"command":["python3","h.py"],
      "workdir":"/w","env":{"B":"2"}}})"),
                             &s)
                  .ok());
  EndpointSpec t;
  json::value v = s.ToJson();
  v.as_object().erase("createdAt");
  ASSERT_TRUE(ApplySpecPatch(v, &t).ok());
  EXPECT_EQ(ToJson(s.ToJson()), ToJson(t.ToJson()));
}

TEST(EndpointSpecTest, ImageFieldsAndTheRegistryPasswordStaysSecret) {
  EndpointSpec s;
  ASSERT_TRUE(ApplySpecPatch(J(R"({"image":"127.0.0.1:5000/w:1","registryAuth":{"username":"u",
      "password":"p4ss"},"volume":"models","volumeMountPath":"/data","readOnlyRootfs":true})"),
                             &s)
                  .ok());
  EXPECT_EQ(s.image, "127.0.0.1:5000/w:1");
  EXPECT_EQ(s.registry_password, "p4ss");
  json::object shown = s.ToJson();
  EXPECT_EQ(shown.at("registryAuth").at("password").as_string(), "********");
  EXPECT_EQ(ToJson(shown).find("p4ss"), std::string::npos);
  EXPECT_EQ(s.ToJson(/*with_secrets=*/true).at("registryAuth").at("password").as_string(), "p4ss");
  // What the API showed, sent back as an update, keeps the password.
  ASSERT_TRUE(ApplySpecPatch(shown, &s).ok());
  EXPECT_EQ(s.registry_password, "p4ss");
  EXPECT_EQ(s.volume_mount_path, "/data");
  EXPECT_TRUE(s.read_only_rootfs);
  for (const char* bad : {R"({"image":"a b"})", R"({"volumeMountPath":"rel"})",
                          R"({"volume":"../x"})", R"({"registryAuth":{"username":"u"}})",
                          R"({"bundle":"d","image":"x"})", R"({"readOnlyRootfs":"yes"})"}) {
    EndpointSpec t;
    EXPECT_EQ(ApplySpecPatch(J(bad), &t).code(), Code::kInvalidArgument) << bad;
  }
}

class RegistryTest : public ::testing::Test {
 protected:
  RegistryTest()
      : jobs_(&clock_, &store_, {}, [](auto&&...) {}),
        endpoints_(&clock_, &store_, &jobs_),
        workers_(&clock_, &store_, &jobs_, WorkerOptions{}) {}
  FakeClock clock_;
  store::MemoryStore store_;
  jobs::JobManager jobs_;
  EndpointRegistry endpoints_;
  WorkerRegistry workers_;
};

TEST_F(RegistryTest, EndpointCrudPersistsAndFeedsJobs) {
  auto e = endpoints_.Create(J(R"({"id":"echo","executionTimeoutMs":5000})"), {});
  ASSERT_TRUE(e.ok());
  EXPECT_TRUE(jobs_.HasEndpoint("echo"));
  EXPECT_EQ(endpoints_.Create(J(R"({"id":"echo"})"), {}).status().code(), Code::kAlreadyExists);
  EXPECT_EQ(endpoints_.Create(J(R"({"id":"bad id"})"), {}).status().code(), Code::kInvalidArgument);
  auto u = endpoints_.Update("echo", J(R"({"workersMax":7})"), {});
  ASSERT_TRUE(u.ok());
  EXPECT_EQ(u->workers_max, 7);
  EXPECT_EQ(u->version, 2);
  EXPECT_EQ(u->execution_timeout_ms, 5000);

  EndpointRegistry reloaded(&clock_, &store_, &jobs_);
  ASSERT_TRUE(reloaded.Load().ok());
  ASSERT_NE(reloaded.Get("echo"), nullptr);
  EXPECT_EQ(reloaded.Get("echo")->workers_max, 7);
  EXPECT_EQ(reloaded.Get("echo")->version, 2);

  ASSERT_TRUE(endpoints_.Delete("echo", {}).ok());
  EXPECT_FALSE(jobs_.HasEndpoint("echo"));
  EXPECT_EQ(endpoints_.Delete("echo", {}).code(), Code::kNotFound);
}

TEST_F(RegistryTest, StoppedWorkersAreNotLoadedAgainAfterARestart) {
  endpoints_.Create(J(R"({"id":"ep"})"), {}).ok();
  auto live = workers_.Register("ep", {});
  auto stopped = workers_.Register("ep", {});
  ASSERT_TRUE(live.ok() && stopped.ok());
  workers_.Stop(stopped->first.id, "idle");
  WorkerRegistry reloaded(&clock_, &store_, &jobs_, WorkerOptions{});
  ASSERT_TRUE(reloaded.Load().ok());
  EXPECT_NE(reloaded.Get(live->first.id), nullptr);
  EXPECT_EQ(reloaded.Get(stopped->first.id), nullptr);
}

TEST_F(RegistryTest, WorkerKeysAreCheckedPerWorker) {
  endpoints_.Create(J(R"({"id":"ep"})"), {}).ok();
  auto a = workers_.Register("ep", {});
  auto b = workers_.Register("ep", {});
  ASSERT_TRUE(a.ok() && b.ok());
  const std::string& a_id = a->first.id;
  EXPECT_TRUE(workers_.Authenticate("ep", a_id, a->second).ok());
  EXPECT_EQ(workers_.Authenticate("ep", a_id, "").status().code(), Code::kUnauthenticated);
  EXPECT_EQ(workers_.Authenticate("ep", a_id, "nope").status().code(), Code::kUnauthenticated);
  EXPECT_EQ(workers_.Authenticate("ep", a_id, b->second).status().code(), Code::kPermissionDenied);
  EXPECT_EQ(workers_.Authenticate("other", a_id, a->second).status().code(),
            Code::kPermissionDenied);
  // Only the hash is stored.
  auto objs = *store_.LoadObjects("worker");
  ASSERT_EQ(objs.size(), 2u);
  EXPECT_EQ(objs[0].data.find(a->second), std::string::npos);
  EXPECT_EQ(objs[1].data.find(a->second), std::string::npos);
}

TEST_F(RegistryTest, SilentWorkerIsLostAfterThreeIntervalsAndItsJobRequeued) {
  endpoints_.Create(J(R"({"id":"ep"})"), {}).ok();
  auto w = workers_.Register("ep", {});
  WorkerInfo* info = *workers_.Authenticate("ep", w->first.id, w->second);
  jobs::SubmitRequest r;
  r.endpoint_id = "ep";
  r.input = "{}";
  std::string id = (*jobs_.Submit(r, {}))->rec.id;
  workers_.Seen(info, true);
  jobs_.Take("ep", info->id, 1, 0, [](auto) {});
  EXPECT_EQ(workers_.Counts("ep").running, 1);
  clock_.Advance(29'000);
  workers_.Ping(info, {id});
  clock_.Advance(30'000);
  workers_.Tick();
  EXPECT_EQ(info->state, WorkerState::kReady);
  clock_.Advance(1);
  workers_.Tick();
  EXPECT_EQ(info->state, WorkerState::kUnhealthy);
  EXPECT_EQ(jobs_.Get(id)->status, jobs::JobStatus::kInQueue);
  EXPECT_EQ(workers_.Counts("ep").unhealthy, 1);
  // A stopped worker's key stops working.
  workers_.Stop(info->id, "killed");
  EXPECT_EQ(workers_.Authenticate("ep", w->first.id, w->second).status().code(),
            Code::kUnauthenticated);
  clock_.Advance(WorkerOptions{}.forget_after_ms + 1);
  workers_.Tick();
  EXPECT_TRUE(workers_.List("ep").empty());
}

TEST_F(RegistryTest, SlowStartingWorkerIsGivenTheStartTimeoutNotThePingTimeout) {
  // Regression: a worker loading a model for over 30 s (before the SDK starts pinging) was
  // declared lost and killed, over and over.
  endpoints_.Create(J(R"({"id":"ep"})"), {}).ok();
  auto w = workers_.Register("ep", {});
  clock_.Advance(5 * 60 * 1000);
  workers_.Tick();
  WorkerInfo* info = workers_.Get(w->first.id);
  EXPECT_EQ(info->state, WorkerState::kInitializing);
  clock_.Advance(5 * 60 * 1000 + 1);
  workers_.Tick();
  EXPECT_EQ(info->state, WorkerState::kUnhealthy);
  EXPECT_NE(info->last_error.find("not started"), std::string::npos);
}

// A worker registered by hand (gantry worker-env) whose process never starts stops counting
// as initializing after the start timeout (--worker-start-timeout-s), then is forgotten like any
// dead worker: forget_after its last sign of life.
TEST_F(RegistryTest, NeverConnectedWorkerIsLostAfterTheStartTimeoutThenForgotten) {
  WorkerOptions o;
  o.start_timeout_ms = 2'000;
  WorkerRegistry workers(&clock_, &store_, &jobs_, o);
  endpoints_.Create(J(R"({"id":"ep"})"), {}).ok();
  auto w = workers.Register("ep", {});
  ASSERT_TRUE(w.ok());
  clock_.Advance(2'000);
  workers.Tick();
  EXPECT_EQ(workers.Counts("ep").initializing, 1);
  clock_.Advance(1);
  workers.Tick();
  EXPECT_EQ(workers.Counts("ep").initializing, 0);
  EXPECT_EQ(workers.Counts("ep").unhealthy, 1);
  EXPECT_NE(workers.Get(w->first.id)->last_error.find("not started after 2 s"), std::string::npos);
  clock_.Advance(o.forget_after_ms);
  workers.Tick();
  EXPECT_TRUE(workers.List("ep").empty());
  EXPECT_EQ(workers.Authenticate("ep", w->first.id, w->second).status().code(),
            Code::kUnauthenticated);
  EXPECT_TRUE(store_.LoadObjects("worker")->empty());
}

// A normal stop (idleness) is no error, and the worker's key works until the stop ends, so that
// its process meets no 401 between the decision and its agent's SIGTERM.
TEST_F(RegistryTest, NormalStopLeavesNoErrorAndKeepsTheKeyUntilItEnds) {
  endpoints_.Create(J(R"({"id":"ep"})"), {}).ok();
  auto w = workers_.Register("ep", {});
  WorkerInfo* info = *workers_.Authenticate("ep", w->first.id, w->second);
  workers_.Seen(info, true);
  workers_.BeginStop(info->id, "idle for 5 s");
  EXPECT_TRUE(workers_.Authenticate("ep", info->id, w->second).ok());
  EXPECT_TRUE(info->draining);  // job-take answers 204
  EXPECT_EQ(info->state, WorkerState::kReady);
  EXPECT_EQ(workers_.Counts("ep").ready, 0);
  EXPECT_TRUE(store_.LoadObjects("worker")->empty());  // a restart does not run it again
  // Its pings end before its exit is reported: that is no loss.
  clock_.Advance(WorkerOptions{}.stop_exit_grace_ms);
  workers_.Tick();
  EXPECT_EQ(info->state, WorkerState::kReady);
  workers_.EndStop(info->id);
  EXPECT_EQ(info->state, WorkerState::kStopped);
  EXPECT_EQ(info->last_error, "");
  EXPECT_EQ(info->stop_reason, "idle for 5 s");
  EXPECT_EQ(workers_.Authenticate("ep", info->id, w->second).status().code(),
            Code::kUnauthenticated);
}

// A node that vanished never reports the exit: the key still stops working after a grace.
TEST_F(RegistryTest, NormalStopWhoseExitIsNeverReportedEndsAfterItsGrace) {
  endpoints_.Create(J(R"({"id":"ep"})"), {}).ok();
  auto w = workers_.Register("ep", {});
  WorkerInfo* info = *workers_.Authenticate("ep", w->first.id, w->second);
  workers_.Seen(info, true);
  workers_.BeginStop(info->id, "idle for 5 s");
  clock_.Advance(WorkerOptions{}.stop_exit_grace_ms + 1);
  workers_.Tick();
  EXPECT_EQ(info->state, WorkerState::kStopped);
  EXPECT_EQ(info->last_error, "");
  EXPECT_FALSE(workers_.Authenticate("ep", info->id, w->second).ok());
  // A failure's stop is immediate and keeps its error.
  auto other = workers_.Register("ep", {});
  workers_.Stop(other->first.id, "exited with code 1");
  EXPECT_EQ(workers_.Get(other->first.id)->last_error, "exited with code 1");
  EXPECT_EQ(workers_.Get(other->first.id)->stop_reason, "exited with code 1");
}

}  // namespace
}  // namespace gantry::scheduling
