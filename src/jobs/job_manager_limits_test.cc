// What a failed write and an oversized stream do to a job: the JobManager's limits.
#include <gtest/gtest.h>

#include "jobs/job_manager_test_fixture.h"

namespace gantry::jobs {
namespace {

json::value J(const std::string& s) { return *ParseJson(s); }

TEST_F(JobManagerTest, ARunJobIsOfferedOnlyOnceDurableAndForgottenIfItsWriteFails) {
  store_.set_deferred(true);
  std::vector<std::string> got;
  bool answered = false;
  jm_->Take("ep", "w1", 1, 60'000, [&](std::vector<const Job*> js) {
    answered = true;
    for (auto* j : js) got.push_back(j->rec.id);
  });
  Status durable = Internal("not yet");
  SubmitRequest r;
  r.endpoint_id = "ep";
  r.input = "{}";
  auto failed = jm_->Submit(r, [&](Status s) { durable = s; });
  ASSERT_TRUE(failed.ok());
  const std::string failed_id = (*failed)->rec.id;
  EXPECT_FALSE(answered);  // not offered before its write is durable
  store_.FailDeferred(Unavailable("disk full"));
  EXPECT_EQ(durable.code(), Code::kUnavailable);
  EXPECT_FALSE(answered);  // nor after it failed
  EXPECT_EQ(jm_->Get(failed_id), nullptr);
  EXPECT_TRUE(queued_.empty());
  // The next one is written, then offered to the worker that waits.
  auto ok = jm_->Submit(r, [&](Status s) { durable = s; });
  ASSERT_TRUE(ok.ok());
  const std::string ok_id = (*ok)->rec.id;
  EXPECT_FALSE(answered);
  store_.FlushDeferred();
  EXPECT_TRUE(durable.ok());
  EXPECT_TRUE(answered);
  EXPECT_EQ(got, std::vector<std::string>{ok_id});
  // The failed job's record is deleted, should its write have landed after all.
  store_.FlushDeferred();
  EXPECT_EQ(store_.job(failed_id), nullptr);
  EXPECT_NE(store_.job(ok_id), nullptr);
}

TEST_F(JobManagerTest, AResultIsShownOnlyOnceDurableAndAFailedWriteChangesNothing) {
  const std::string id = Submit();
  ASSERT_EQ(Take("w1"), std::vector<std::string>{id});
  bool ended = false;
  jm_->WaitForJob(id, 60'000, [&](const Job*) { ended = true; });
  store_.set_deferred(true);
  Status durable = Internal("not yet");
  auto done =
      jm_->Finish("w1", id, J(R"({"output":{"n":1}})"), false, [&](Status s) { durable = s; });
  ASSERT_TRUE(done.ok());
  // Not applied before its write is durable: nobody sees the result yet.
  EXPECT_EQ(StatusOf(id), JobStatus::kInProgress);
  EXPECT_FALSE(ended);
  store_.FailDeferred(Unavailable("disk full"));
  // The write failed: the worker is told so, and the job is as it was, still its worker's.
  EXPECT_EQ(durable.code(), Code::kUnavailable);
  EXPECT_EQ(StatusOf(id), JobStatus::kInProgress);
  EXPECT_EQ(jm_->Get(id)->rec.output, "");
  EXPECT_FALSE(ended);
  EXPECT_TRUE(posts_.empty());
  EXPECT_EQ(jm_->HeldBy("w1"), std::vector<std::string>{id});
  EXPECT_EQ(store_.job(id)->status, "IN_PROGRESS");
  // The worker posts it again (the SDK retries): written, then shown.
  ASSERT_TRUE(
      jm_->Finish("w1", id, J(R"({"output":{"n":1}})"), false, [&](Status s) { durable = s; })
          .ok());
  store_.FlushDeferred();
  EXPECT_TRUE(durable.ok());
  EXPECT_EQ(StatusOf(id), JobStatus::kCompleted);
  EXPECT_TRUE(ended);
  EXPECT_EQ(store_.job(id)->status, "COMPLETED");
  EXPECT_EQ(store_.job(id)->output, R"({"n":1})");
  EXPECT_TRUE(jm_->HeldBy("w1").empty());
}

TEST_F(JobManagerTest, ACancelWhoseWriteFailsChangesNothing) {
  const std::string id = Submit();
  ASSERT_EQ(Take("w1"), std::vector<std::string>{id});
  store_.set_deferred(true);
  Status durable = Internal("not yet");
  ASSERT_TRUE(jm_->Cancel(id, [&](Status s) { durable = s; }).ok());
  EXPECT_EQ(StatusOf(id), JobStatus::kInProgress);  // not before it is durable
  store_.FailDeferred(Unavailable("disk full"));
  EXPECT_EQ(durable.code(), Code::kUnavailable);
  EXPECT_EQ(StatusOf(id), JobStatus::kInProgress);
  std::vector<std::string> stops;
  jm_->PollStops("w1", 0, [&](std::vector<std::string> ids) { stops = ids; });
  EXPECT_TRUE(stops.empty());  // its worker was not asked to stop
  ASSERT_TRUE(jm_->Cancel(id, [&](Status s) { durable = s; }).ok());
  store_.FlushDeferred();
  EXPECT_TRUE(durable.ok());
  EXPECT_EQ(StatusOf(id), JobStatus::kCancelled);
  EXPECT_EQ(store_.job(id)->status, "CANCELLED");
  jm_->PollStops("w1", 0, [&](std::vector<std::string> ids) { stops = ids; });
  EXPECT_EQ(stops, std::vector<std::string>{id});
}

TEST_F(JobManagerTest, ARetryWhoseWriteFailsChangesNothing) {
  const std::string id = Submit();
  ASSERT_EQ(Take("w1"), std::vector<std::string>{id});
  ASSERT_TRUE(jm_->Finish("w1", id, J(R"({"error":"boom"})"), false, {}).ok());
  ASSERT_EQ(StatusOf(id), JobStatus::kFailed);
  store_.set_deferred(true);
  Status durable = Internal("not yet");
  ASSERT_TRUE(jm_->Retry(id, [&](Status s) { durable = s; }).ok());
  EXPECT_EQ(StatusOf(id), JobStatus::kFailed);  // not before it is durable
  store_.FailDeferred(Unavailable("disk full"));
  EXPECT_EQ(durable.code(), Code::kUnavailable);
  EXPECT_EQ(StatusOf(id), JobStatus::kFailed);
  EXPECT_EQ(jm_->Get(id)->rec.error, R"("boom")");
  EXPECT_TRUE(Take("w1").empty());  // nothing was queued
  ASSERT_TRUE(jm_->Retry(id, [&](Status s) { durable = s; }).ok());
  store_.FlushDeferred();
  EXPECT_TRUE(durable.ok());
  EXPECT_EQ(StatusOf(id), JobStatus::kInQueue);
  EXPECT_EQ(store_.job(id)->status, "IN_QUEUE");
  store_.set_deferred(false);
  EXPECT_EQ(Take("w1"), std::vector<std::string>{id});
}

TEST_F(JobManagerTest, AResultAndACancelWrittenTogetherEndAsTheFirstAndTheStoreAgrees) {
  for (bool result_first : {true, false}) {
    const std::string id = Submit();
    ASSERT_EQ(Take("w1"), std::vector<std::string>{id});
    store_.set_deferred(true);
    int durable = 0;
    auto finish = [&] {
      ASSERT_TRUE(
          jm_->Finish("w1", id, J(R"({"output":1})"), false, [&](Status s) { durable += s.ok(); })
              .ok());
    };
    auto cancel = [&] { ASSERT_TRUE(jm_->Cancel(id, [&](Status s) { durable += s.ok(); }).ok()); };
    if (result_first) {
      finish();
      cancel();
    } else {
      cancel();
      finish();
    }
    store_.FlushDeferred();
    store_.FlushDeferred();  // what the first write's completion wrote after them
    EXPECT_EQ(durable, 2);
    const JobStatus want = result_first ? JobStatus::kCompleted : JobStatus::kCancelled;
    EXPECT_EQ(StatusOf(id), want);
    EXPECT_EQ(store_.job(id)->status, StatusName(want));  // the last write is memory's
    store_.set_deferred(false);
  }
}

TEST_F(JobManagerTest, AStreamPastItsCapsIsCutAndSaysSo) {
  options_.stream_max_bytes = 10;
  options_.stream_max_chunks = 3;
  options_.progress_max_bytes = 8;
  Reset();
  std::string id = Submit();
  ASSERT_EQ(Take("w1"), std::vector<std::string>{id});
  EXPECT_TRUE(jm_->AppendStream("w1", id, "\"abc\"").ok());  // 5 bytes
  EXPECT_TRUE(jm_->AppendStream("w1", id, "\"def\"").ok());  // 10
  Status cut = jm_->AppendStream("w1", id, "1");             // 11: past the bytes
  EXPECT_EQ(cut.code(), Code::kPayloadTooLarge);
  EXPECT_EQ(jm_->AppendStream("w1", id, "1").code(), Code::kPayloadTooLarge);  // and after
  const std::string status = StatusJson(*jm_->Get(id), 0);
  EXPECT_NE(status.find("\"streamCut\":\"the stream was cut after 2 chunks (10 bytes)"),
            std::string::npos)
      << status;
  EXPECT_EQ(jm_->DrainStream(id), (std::vector<std::string>{"\"abc\"", "\"def\""}));
  // Progress past its cap is refused, and the last one kept.
  EXPECT_TRUE(
      jm_->Finish("w1", id, *ParseJson(R"({"status":"IN_PROGRESS","output":"12345"})"), false, {})
          .ok());
  auto big = jm_->Finish("w1", id, *ParseJson(R"({"status":"IN_PROGRESS","output":"123456789"})"),
                         false, {});
  EXPECT_EQ(big.status().code(), Code::kPayloadTooLarge);
  EXPECT_NE(StatusJson(*jm_->Get(id), 0).find("\"output\":\"12345\""), std::string::npos);
  // The chunks by count: a new job, three chunks, the fourth refused.
  std::string id2 = Submit();
  ASSERT_EQ(Take("w2"), std::vector<std::string>{id2});
  for (int i = 0; i < 3; ++i) EXPECT_TRUE(jm_->AppendStream("w2", id2, "1").ok()) << i;
  EXPECT_EQ(jm_->AppendStream("w2", id2, "1").code(), Code::kPayloadTooLarge);
}

TEST_F(JobManagerTest, AnEndpointsQueuedInputsAreCappedInBytes) {
  QueueConfig qc;
  qc.max_queued_bytes = 25;
  jm_->SetEndpoint("ep", qc);
  const std::string ten = R"({"n":"12"})";  // 10 bytes
  std::string a = Submit(ten);
  Submit(ten);
  SubmitRequest r;
  r.endpoint_id = "ep";
  r.input = ten;
  auto refused = jm_->Submit(r, {});  // 30 > 25
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.status().code(), Code::kResourceExhausted);
  EXPECT_NE(refused.status().message().find("inputs hold 20 bytes"), std::string::npos)
      << refused.status().ToString();
  // A job taken leaves the queue, and its bytes with it.
  ASSERT_EQ(Take("w1"), std::vector<std::string>{a});
  EXPECT_TRUE(jm_->Submit(r, {}).ok());
}

}  // namespace
}  // namespace gantry::jobs
