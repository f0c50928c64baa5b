#include "jobs/job.h"

#include <gtest/gtest.h>

namespace gantry::jobs {
namespace {

TEST(JobTest, StatusNamesRoundTrip) {
  for (JobStatus s : {JobStatus::kInQueue, JobStatus::kInProgress, JobStatus::kCompleted,
                      JobStatus::kFailed, JobStatus::kCancelled, JobStatus::kTimedOut}) {
    EXPECT_EQ(ParseStatus(StatusName(s)), s);
  }
  EXPECT_EQ(ParseStatus("in_queue"), std::nullopt);
  EXPECT_FALSE(IsTerminal(JobStatus::kInProgress));
  EXPECT_TRUE(IsTerminal(JobStatus::kCancelled));
}

TEST(JobTest, StatusJsonOfQueuedAndRunningJobs) {
  Job j;
  j.rec.id = "j1";
  j.rec.created_ms = 1000;
  EXPECT_EQ(StatusJson(j, 1250),
            R"({"id":"j1","status":"IN_QUEUE","delayTime":250,"executionTime":0})");
  // A running job shows its progress as its output, and how long it waited for a cold start.
  j.status = JobStatus::kInProgress;
  j.rec.started_ms = 1300;
  j.rec.worker_id = "w1";
  j.progress = R"("50%")";
  j.rec.output = R"("stale")";
  j.cold_start_wait_ms = 200;
  j.cold_start_worker = "w1";
  EXPECT_EQ(StatusJson(j, 1400),
            R"({"id":"j1","status":"IN_PROGRESS","delayTime":300,"executionTime":100,)"
            R"("output":"50%","workerId":"w1","coldStart":{"workerId":"w1","waitedMs":200}})");
}

}  // namespace
}  // namespace gantry::jobs
