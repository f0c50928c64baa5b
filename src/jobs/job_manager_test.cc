#include "jobs/job_manager.h"

#include <gtest/gtest.h>

#include "jobs/job_manager_test_fixture.h"

namespace gantry::jobs {
namespace {

json::value J(const std::string& s) { return *ParseJson(s); }

TEST_F(JobManagerTest, SubmitTakeFinish) {
  std::string id = Submit();
  EXPECT_EQ(StatusOf(id), JobStatus::kInQueue);
  EXPECT_NE(store_.job(id), nullptr);
  clock_.Advance(40);
  auto taken = Take("w1");
  ASSERT_EQ(taken, std::vector<std::string>{id});
  EXPECT_EQ(StatusOf(id), JobStatus::kInProgress);
  EXPECT_EQ(jm_->Counts("ep").in_progress, 1);
  clock_.Advance(100);
  auto out = jm_->Finish("w1", id, J(R"({"output":{"ok":true}})"), false, {});
  ASSERT_TRUE(out.ok());
  EXPECT_TRUE(out->accepted);
  const Job* j = jm_->Get(id);
  EXPECT_EQ(j->status, JobStatus::kCompleted);
  EXPECT_EQ(j->rec.output, R"({"ok":true})");
  EXPECT_EQ(
      StatusJson(*j, clock_.NowMs()),
      "{\"id\":\"" + id +
          R"(","status":"COMPLETED","delayTime":40,"executionTime":100,"output":{"ok":true},"workerId":"w1"})");
  EXPECT_EQ(store_.job(id)->status, "COMPLETED");
  EXPECT_EQ(jm_->Counts("ep").completed, 1);
  // Its observers heard that it was queued, and how long it ran.
  EXPECT_EQ(queued_, std::vector<std::string>{"ep"});
  EXPECT_EQ(finished_, (std::vector<std::pair<std::string, int64_t>>{{"ep", 100}}));
  jm_->RemoveObserver(this);
  Submit();
  EXPECT_EQ(queued_.size(), 1u);  // no longer told
  // job-done is idempotent.
  auto again = jm_->Finish("w1", id, J(R"({"output":{"ok":false}})"), false, {});
  ASSERT_TRUE(again.ok());
  EXPECT_FALSE(again->accepted);
  EXPECT_EQ(jm_->Get(id)->rec.output, R"({"ok":true})");
}

TEST_F(JobManagerTest, RunsyncJobWhoseWaitEndsIsMadeDurable) {
  std::string sync = Submit("{}", true);
  bool durable = false;
  jm_->MakeDurable(sync, [&](Status st) { durable = st.ok(); });
  EXPECT_TRUE(durable);
  ASSERT_NE(store_.job(sync), nullptr);
  EXPECT_EQ(store_.job(sync)->status, "IN_QUEUE");
  // From then on it is updated like any job.
  Take("w1");
  jm_->Finish("w1", sync, J(R"({"output":2})"), false, {}).ok();
  EXPECT_EQ(store_.job(sync)->output, "2");
}

TEST_F(JobManagerTest, UnknownEndpointAndPolicyRanges) {
  SubmitRequest r;
  r.endpoint_id = "nope";
  r.input = "{}";
  EXPECT_EQ(jm_->Submit(r, {}).status().code(), Code::kNotFound);
  r.endpoint_id = "ep";
  r.execution_timeout_ms = 10;
  EXPECT_EQ(jm_->Submit(r, {}).status().code(), Code::kInvalidArgument);
  r.execution_timeout_ms.reset();
  r.ttl_ms = 1;
  EXPECT_EQ(jm_->Submit(r, {}).status().code(), Code::kInvalidArgument);
  EXPECT_EQ(jm_->job_count(), 0u);
}

TEST_F(JobManagerTest, QueueFullIsResourceExhausted) {
  QueueConfig qc;
  qc.max_queue = 2;
  jm_->SetEndpoint("ep", qc);
  Submit();
  Submit();
  SubmitRequest r;
  r.endpoint_id = "ep";
  r.input = "{}";
  EXPECT_EQ(jm_->Submit(r, {}).status().code(), Code::kResourceExhausted);
}

TEST_F(JobManagerTest, DurableCallbackWaitsForStore) {
  store_.set_deferred(true);
  bool durable = false;
  SubmitRequest r;
  r.endpoint_id = "ep";
  r.input = "{}";
  ASSERT_TRUE(jm_->Submit(r, [&](Status s) { durable = s.ok(); }).ok());
  EXPECT_FALSE(durable);
  store_.FlushDeferred();
  EXPECT_TRUE(durable);
}

TEST_F(JobManagerTest, LongPollTakeGetsJobOnArrivalOrTimesOut) {
  std::vector<std::string> got;
  bool called = false;
  jm_->Take("ep", "w1", 1, 60'000, [&](std::vector<const Job*> js) {
    called = true;
    for (auto* j : js) got.push_back(j->rec.id);
  });
  EXPECT_FALSE(called);
  std::string id = Submit();
  EXPECT_TRUE(called);
  EXPECT_EQ(got, std::vector<std::string>{id});

  called = false;
  jm_->Take("ep", "w1", 1, 60'000, [&](std::vector<const Job*> js) {
    called = true;
    EXPECT_TRUE(js.empty());
  });
  Advance(59'999);
  EXPECT_FALSE(called);
  Advance(1);
  EXPECT_TRUE(called);
}

TEST_F(JobManagerTest, BatchTakeHonoursMaxAndOrder) {
  std::string a = Submit(), b = Submit(), c = Submit();
  EXPECT_EQ(Take("w1", 2), (std::vector<std::string>{a, b}));
  EXPECT_EQ(Take("w1", 5), (std::vector<std::string>{c}));
  EXPECT_TRUE(Take("w1", 5).empty());
}

TEST_F(JobManagerTest, RunsyncWaitEndsWithResultOrCurrentStatus) {
  std::string id = Submit("{}", true);
  JobStatus seen = JobStatus::kCancelled;
  bool called = false;
  jm_->WaitForJob(id, 1000, [&](const Job* j) {
    called = true;
    seen = j->status;
  });
  Advance(999);
  EXPECT_FALSE(called);
  Advance(1);
  ASSERT_TRUE(called);
  EXPECT_EQ(seen, JobStatus::kInQueue);

  called = false;
  jm_->WaitForJob(id, 5000, [&](const Job* j) {
    called = true;
    seen = j->status;
  });
  Take("w1");
  jm_->Finish("w1", id, J(R"({"output":1})"), false, {}).ok();
  EXPECT_TRUE(called);
  EXPECT_EQ(seen, JobStatus::kCompleted);
  // runsync results are kept for 1 minute.
  Advance(60'000);
  EXPECT_EQ(jm_->Get(id), nullptr);
  EXPECT_EQ(store_.job(id), nullptr);
}

// A /runsync job is written only when someone outside this process may ask for it later: its
// id given out while it runs (MakeDurable), or a webhook to deliver.
TEST_F(JobManagerTest, RunsyncJobIsWrittenOnlyOnceItsIdIsGivenOutOrItHasAWebhook) {
  const std::string plain = Submit("{}", true), told = Submit("{}", true);
  SubmitRequest r;
  r.endpoint_id = "ep";
  r.input = "{}";
  r.sync = true;
  r.webhook = "http://hook.example/x";
  const std::string hooked = (*jm_->Submit(r, {}))->rec.id;
  bool durable = false;
  jm_->MakeDurable(told, [&](Status st) { durable = st.ok(); });
  EXPECT_TRUE(durable);
  ASSERT_EQ(Take("w1", 3).size(), 3u);
  for (const std::string& id : {plain, told, hooked}) {
    bool acked = false;
    ASSERT_TRUE(
        jm_->Finish("w1", id, J(R"({"output":7})"), false, [&](Status st) { acked = st.ok(); })
            .ok());
    EXPECT_TRUE(acked) << id;  // the worker's job-done is answered either way
    EXPECT_EQ(StatusOf(id), JobStatus::kCompleted);
  }
  EXPECT_EQ(store_.job(plain), nullptr);  // its caller has the result; kept in memory only
  ASSERT_NE(store_.job(told), nullptr);
  EXPECT_EQ(store_.job(told)->status, "COMPLETED");
  EXPECT_EQ(store_.job(told)->input, "{}");
  ASSERT_NE(store_.job(hooked), nullptr);
  EXPECT_EQ(store_.job(hooked)->status, "COMPLETED");
}

TEST_F(JobManagerTest, RunResultsKeptThirtyMinutes) {
  std::string id = Submit();
  Take("w1");
  jm_->Finish("w1", id, J(R"({"output":1})"), false, {}).ok();
  Advance(30 * 60 * 1000 - 1);
  EXPECT_NE(jm_->Get(id), nullptr);
  Advance(1);
  EXPECT_EQ(jm_->Get(id), nullptr);
}

TEST_F(JobManagerTest, ErrorMarksFailedEvenWhenNotAString) {
  std::string a = Submit(), b = Submit();
  Take("w1", 2);
  jm_->Finish("w1", a, J(R"({"error":"{\"error_type\":\"ValueError\"}"})"), false, {}).ok();
  jm_->Finish("w1", b, J(R"({"error":{"code":7}})"), false, {}).ok();
  EXPECT_EQ(StatusOf(a), JobStatus::kFailed);
  EXPECT_EQ(jm_->Get(a)->rec.error, R"("{\"error_type\":\"ValueError\"}")");
  EXPECT_EQ(StatusOf(b), JobStatus::kFailed);
  EXPECT_EQ(jm_->Get(b)->rec.error, R"({"code":7})");
  EXPECT_EQ(jm_->Counts("ep").failed, 2);
}

TEST_F(JobManagerTest, ProgressShowsWhileRunningAndLateProgressIgnored) {
  std::string id = Submit();
  Take("w1");
  jm_->Finish("w1", id, J(R"({"status":"IN_PROGRESS","output":"50%"})"), false, {}).ok();
  EXPECT_EQ(StatusOf(id), JobStatus::kInProgress);
  EXPECT_NE(StatusJson(*jm_->Get(id), clock_.NowMs()).find(R"("output":"50%")"), std::string::npos);
  jm_->Finish("w1", id, J(R"({"output":"done"})"), false, {}).ok();
  auto late = jm_->Finish("w1", id, J(R"({"status":"IN_PROGRESS","output":"90%"})"), false, {});
  EXPECT_FALSE(late->accepted);
  EXPECT_EQ(StatusOf(id), JobStatus::kCompleted);
  EXPECT_EQ(jm_->Get(id)->rec.output, R"("done")");
}

TEST_F(JobManagerTest, StreamChunksDrainAndBecomeOutput) {
  std::string id = Submit();
  Take("w1");
  ASSERT_TRUE(jm_->AppendStream("w1", id, "1").ok());
  ASSERT_TRUE(jm_->AppendStream("w1", id, "2").ok());
  EXPECT_EQ(jm_->DrainStream(id), (std::vector<std::string>{"1", "2"}));
  EXPECT_TRUE(jm_->DrainStream(id).empty());
  ASSERT_TRUE(jm_->AppendStream("w1", id, "3").ok());
  EXPECT_EQ(jm_->AppendStream("w2", id, "x").code(), Code::kFailedPrecondition);
  jm_->Finish("w1", id, J(R"({"output":[]})"), true, {}).ok();
  EXPECT_EQ(jm_->Get(id)->rec.output, "[1,2,3]");
  EXPECT_EQ(jm_->DrainStream(id), (std::vector<std::string>{"3"}));
}

TEST_F(JobManagerTest, ExecutionTimeoutStopsThenKills) {
  SubmitRequest r;
  r.endpoint_id = "ep";
  r.input = "{}";
  r.execution_timeout_ms = 5000;
  std::string id = (*jm_->Submit(r, {}))->rec.id;
  Take("w1");
  Advance(4999);
  EXPECT_EQ(StatusOf(id), JobStatus::kInProgress);
  Advance(1);
  EXPECT_EQ(StatusOf(id), JobStatus::kTimedOut);
  EXPECT_NE(jm_->Get(id)->rec.error.find("execution timeout"), std::string::npos);
  // The stop is offered, and offered again while the job runs on.
  std::vector<std::string> stops;
  jm_->PollStops("w1", 60'000, [&](std::vector<std::string> ids) { stops = ids; });
  EXPECT_EQ(stops, std::vector<std::string>{id});
  stops.clear();
  jm_->PollStops("w1", 60'000, [&](std::vector<std::string> ids) { stops = ids; });
  EXPECT_TRUE(stops.empty());
  Advance(options_.stop_reoffer_ms);
  EXPECT_EQ(stops, std::vector<std::string>{id});
  EXPECT_TRUE(killed_.empty());
  Advance(options_.stop_grace_ms);
  EXPECT_EQ(killed_, std::vector<std::string>{"w1"});
}

TEST_F(JobManagerTest, StopEndsWhenWorkerReportsTheJobDone) {
  std::string id = Submit();
  Take("w1");
  ASSERT_TRUE(jm_->Cancel(id).ok());
  EXPECT_EQ(StatusOf(id), JobStatus::kCancelled);
  EXPECT_TRUE(jm_->HeldBy("w1").empty());
  std::vector<std::string> stops;
  jm_->PollStops("w1", 0, [&](std::vector<std::string> ids) { stops = ids; });
  EXPECT_EQ(stops, std::vector<std::string>{id});
  // The worker's late result neither revives the job nor keeps the stop alive.
  jm_->Finish("w1", id, J(R"({"output":1})"), false, {}).ok();
  EXPECT_EQ(StatusOf(id), JobStatus::kCancelled);
  Advance(options_.stop_grace_ms + 1);
  EXPECT_TRUE(killed_.empty());
}

TEST_F(JobManagerTest, StopEndsWhenPingNoLongerListsTheJob) {
  std::string id = Submit();
  Take("w1");
  jm_->Cancel(id).ok();
  jm_->PollStops("w1", 0, [](std::vector<std::string>) {});
  jm_->Ping("w1", {}, 10'000);
  Advance(options_.stop_grace_ms + 1);
  EXPECT_TRUE(killed_.empty());
}

TEST_F(JobManagerTest, CancelQueuedJobRemovesItFromTheQueue) {
  std::string a = Submit(), b = Submit();
  auto c = jm_->Cancel(a);
  ASSERT_TRUE(c.ok());
  EXPECT_EQ((*c)->status, JobStatus::kCancelled);
  EXPECT_EQ(Take("w1", 5), std::vector<std::string>{b});
  EXPECT_EQ(jm_->Cancel("missing").status().code(), Code::kNotFound);
}

TEST_F(JobManagerTest, RetryOnlyFailedOrTimedOut) {
  std::string id = Submit();
  EXPECT_EQ(jm_->Retry(id).status().code(), Code::kFailedPrecondition);
  Take("w1");
  jm_->Finish("w1", id, J(R"({"error":"boom"})"), false, {}).ok();
  auto r = jm_->Retry(id);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ((*r)->status, JobStatus::kInQueue);
  EXPECT_TRUE((*r)->rec.error.empty());
  EXPECT_EQ(Take("w2"), std::vector<std::string>{id});
  EXPECT_EQ(jm_->Counts("ep").retried, 1);
}

TEST_F(JobManagerTest, PurgeRemovesOnlyQueued) {
  std::string a = Submit(), b = Submit(), c = Submit();
  Take("w1");
  auto n = jm_->PurgeQueue("ep");
  ASSERT_TRUE(n.ok());
  EXPECT_EQ(*n, 2);
  EXPECT_NE(jm_->Get(a), nullptr);
  EXPECT_EQ(jm_->Get(b), nullptr);
  EXPECT_EQ(jm_->Get(c), nullptr);
  EXPECT_EQ(jm_->Counts("ep").in_queue, 0);
  EXPECT_TRUE(Take("w2").empty());
}

// The fail-fast path: an endpoint whose workers keep failing to start ends its queued jobs.
TEST_F(JobManagerTest, FailQueuedEndsOnlyQueuedJobsWithTheError) {
  std::string a = Submit(), b = Submit(), c = Submit();
  Take("w1");  // a runs
  bool waited = false;
  jm_->WaitForJob(b, 60'000, [&](const Job* j) { waited = j && j->status == JobStatus::kFailed; });
  EXPECT_EQ(jm_->FailQueued("ep", R"("it cannot start")"), 2);
  EXPECT_TRUE(waited);  // a waiting /runsync hears of it at once
  EXPECT_EQ(jm_->Get(a)->status, JobStatus::kInProgress);
  for (const std::string& id : {b, c}) {
    EXPECT_EQ(jm_->Get(id)->status, JobStatus::kFailed);
    EXPECT_EQ(jm_->Get(id)->rec.error, R"("it cannot start")");
    EXPECT_EQ(store_.job(id)->status, "FAILED");
  }
  EXPECT_EQ(jm_->Counts("ep").in_queue, 0);
  EXPECT_EQ(jm_->Counts("ep").failed, 2);
  EXPECT_TRUE(Take("w2").empty());
  EXPECT_EQ(jm_->FailQueued("none", "\"x\""), 0);
}

TEST_F(JobManagerTest, TtlDeletesUnfinishedJobs) {
  SubmitRequest r;
  r.endpoint_id = "ep";
  r.input = "{}";
  r.ttl_ms = 10'000;
  std::string id = (*jm_->Submit(r, {}))->rec.id;
  Advance(9'999);
  EXPECT_NE(jm_->Get(id), nullptr);
  Advance(1);
  EXPECT_EQ(jm_->Get(id), nullptr);
  EXPECT_EQ(jm_->Counts("ep").in_queue, 0);
  EXPECT_TRUE(Take("w1").empty());
}

TEST_F(JobManagerTest, PingRequeuesDroppedJobsAfterGrace) {
  std::string id = Submit();
  Take("w1");
  jm_->Ping("w1", {}, 10'000);  // just taken: the report may lag behind
  EXPECT_EQ(StatusOf(id), JobStatus::kInProgress);
  clock_.Advance(10'001);
  jm_->Ping("w1", {id}, 10'000);
  EXPECT_EQ(StatusOf(id), JobStatus::kInProgress);
  // One ping without it may be stale (its list read before the take, delivered late): a
  // listing ping after it clears it.
  jm_->Ping("w1", {}, 10'000);
  EXPECT_EQ(StatusOf(id), JobStatus::kInProgress);
  jm_->Ping("w1", {id}, 10'000);
  jm_->Ping("w1", {}, 10'000);
  EXPECT_EQ(StatusOf(id), JobStatus::kInProgress);
  // Two in a row: dropped.
  jm_->Ping("w1", {}, 10'000);
  EXPECT_EQ(StatusOf(id), JobStatus::kInQueue);
  EXPECT_EQ(Take("w2"), std::vector<std::string>{id});
}

TEST_F(JobManagerTest, LostWorkerRequeuesUntilAttemptsRunOut) {
  std::string id = Submit();
  Take("w1");
  jm_->WorkerLost("w1", "worker lost");
  EXPECT_EQ(StatusOf(id), JobStatus::kInQueue);
  EXPECT_EQ(Take("w2"), std::vector<std::string>{id});
  jm_->WorkerLost("w2", "worker lost");  // max_attempts is 2
  EXPECT_EQ(StatusOf(id), JobStatus::kFailed);
  EXPECT_NE(jm_->Get(id)->rec.error.find("attempt 2 of 2"), std::string::npos);
}

TEST_F(JobManagerTest, LostWorkersWaitingTakeIsNotGivenItsOwnJob) {
  std::string id = Submit();
  Take("w1");
  bool called = false;
  jm_->Take("ep", "w1", 1, 60'000, [&](std::vector<const Job*> js) {
    called = true;
    EXPECT_TRUE(js.empty());
  });
  jm_->WorkerLost("w1", "lost");
  EXPECT_TRUE(called);
  EXPECT_EQ(StatusOf(id), JobStatus::kInQueue);
}

TEST_F(JobManagerTest, UndeliveredJobsReturnWithoutCostingAnAttempt) {
  std::string id = Submit();
  Take("w1");
  jm_->ReturnUndelivered("w1", {id});
  EXPECT_EQ(StatusOf(id), JobStatus::kInQueue);
  EXPECT_EQ(jm_->Get(id)->rec.attempts, 0);
}

TEST_F(JobManagerTest, LateResultOfRequeuedJobIsAccepted) {
  std::string id = Submit();
  Take("w1");
  jm_->WorkerLost("w1", "lost");
  ASSERT_TRUE(jm_->Finish("w1", id, J(R"({"output":2})"), false, {}).ok());
  EXPECT_EQ(StatusOf(id), JobStatus::kCompleted);
  EXPECT_EQ(jm_->Counts("ep").in_queue, 0);
  EXPECT_TRUE(Take("w2").empty());
}

TEST_F(JobManagerTest, ResultFromAnotherWorkerIsRefused) {
  std::string id = Submit();
  Take("w1");
  EXPECT_EQ(jm_->Finish("w2", id, J(R"({"output":2})"), false, {}).status().code(),
            Code::kFailedPrecondition);
}

TEST_F(JobManagerTest, WebhookRetriedTwiceTenSecondsApart) {
  webhook_ok_ = false;
  SubmitRequest r;
  r.endpoint_id = "ep";
  r.input = "{}";
  r.webhook = "http://127.0.0.1:1/hook";
  std::string id = (*jm_->Submit(r, {}))->rec.id;
  Take("w1");
  jm_->Finish("w1", id, J(R"({"output":1})"), false, {}).ok();
  ASSERT_EQ(posts_.size(), 1u);
  EXPECT_NE(posts_[0].second.find("\"COMPLETED\""), std::string::npos);
  Advance(9'999);
  EXPECT_EQ(posts_.size(), 1u);
  Advance(1);
  EXPECT_EQ(posts_.size(), 2u);
  Advance(10'000);
  EXPECT_EQ(posts_.size(), 3u);
  Advance(60'000);
  EXPECT_EQ(posts_.size(), 3u);
}

TEST_F(JobManagerTest, LoadRestoresQueueAndRunningJobs) {
  std::string a = Submit(), b = Submit(), c = Submit();
  Take("w1");  // a runs on w1
  // A new manager over the same store: as after a crash and restart.
  Reset();
  jm_->Load(*store_.LoadJobs());
  EXPECT_EQ(StatusOf(a), JobStatus::kInProgress);
  EXPECT_EQ(jm_->HeldBy("w1"), std::vector<std::string>{a});
  EXPECT_EQ(Take("w2", 5), (std::vector<std::string>{b, c}));
  std::string d = Submit();
  EXPECT_NE(d, a);
  // The running job is still finished by its worker.
  ASSERT_TRUE(jm_->Finish("w1", a, J(R"({"output":1})"), false, {}).ok());
  EXPECT_EQ(StatusOf(a), JobStatus::kCompleted);
}

TEST_F(JobManagerTest, RemoveEndpointCancelsAndStops) {
  std::string a = Submit(), b = Submit();
  Take("w1");
  jm_->RemoveEndpoint("ep");
  EXPECT_FALSE(jm_->HasEndpoint("ep"));
  EXPECT_EQ(jm_->Get(b), nullptr);
  EXPECT_EQ(StatusOf(a), JobStatus::kCancelled);
  std::vector<std::string> stops;
  jm_->PollStops("w1", 0, [&](std::vector<std::string> ids) { stops = ids; });
  EXPECT_EQ(stops, std::vector<std::string>{a});
}

TEST_F(JobManagerTest, FinishedJobsLeaveNoTimersBehindButRetention) {
  // Regression: TTL and execution-timeout timers of finished jobs used to stay queued until
  // they fired (24 h for TTL), so a busy server's timer heap grew without bound.
  for (int i = 0; i < 100; ++i) {
    std::string id = Submit();
    bool waited = false;
    jm_->WaitForJob(id, 90'000, [&](const Job*) { waited = true; });
    jm_->Take("ep", "w1", 1, 60'000, [](std::vector<const Job*>) {});
    ASSERT_TRUE(jm_->Finish("w1", id, J(R"({"output":1})"), false, {}).ok());
    EXPECT_TRUE(waited);
  }
  EXPECT_EQ(jm_->timer_count(), 100u);  // one retention timer per finished job
  Advance(30 * 60 * 1000);
  EXPECT_EQ(jm_->timer_count(), 0u);
  EXPECT_EQ(jm_->job_count(), 0u);
}

TEST_F(JobManagerTest, WaitersServedEarlyDropTheirTimers) {
  jm_->Take("ep", "w1", 1, 60'000, [](std::vector<const Job*>) {});
  std::string id = Submit();  // served at once: its take timer goes
  jm_->PollStops("w1", 60'000, [](std::vector<std::string>) {});
  jm_->Cancel(id).ok();  // the stop is offered at once: the poll's timer goes
  // Left: the stop's grace timer and the cancelled job's retention timer.
  EXPECT_EQ(jm_->timer_count(), 2u);
}

}  // namespace
}  // namespace gantry::jobs
