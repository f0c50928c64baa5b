#include "jobs/endpoint_queue.h"

#include <gtest/gtest.h>

namespace gantry::jobs {
namespace {

class EndpointQueueTest : public ::testing::Test {
 protected:
  // A job IN_QUEUE, as the JobManager makes one.
  std::shared_ptr<Job> NewJob(const std::string& id, int64_t created_ms, bool low = false) {
    auto j = std::make_shared<Job>();
    j->rec.id = id;
    j->rec.created_ms = created_ms;
    j->rec.low_priority = low;
    queue_.Count(*j, JobStatus::kInQueue, +1);
    return j;
  }

  // What JobManager::SetStatus does.
  void SetStatus(Job& j, JobStatus s) {
    queue_.Count(j, j.status, -1);
    queue_.Count(j, s, +1);
    if (j.status == JobStatus::kInQueue || s == JobStatus::kInQueue) ++j.queue_gen;
    j.status = s;
  }

  EndpointQueue queue_;
};

TEST_F(EndpointQueueTest, PopsInOrderFrontPushesFirst) {
  auto a = NewJob("a", 1), b = NewJob("b", 2), c = NewJob("c", 3);
  queue_.Push(a, false);
  queue_.Push(b, false);
  queue_.Push(c, true);
  EXPECT_EQ(queue_.QueuedIds(), (std::vector<std::string>{"c", "a", "b"}));
  EXPECT_EQ(queue_.Pop(), c.get());
  EXPECT_EQ(queue_.Pop(), a.get());
  EXPECT_EQ(queue_.Pop(), b.get());
  EXPECT_EQ(queue_.Pop(), nullptr);
}

TEST_F(EndpointQueueTest, JobsThatLeftTheQueueAreSkipped) {
  auto taken = NewJob("taken", 1), deleted = NewJob("deleted", 2), requeued = NewJob("re", 3),
       live = NewJob("live", 4);
  for (auto& j : {taken, deleted, requeued, live}) queue_.Push(j, false);
  SetStatus(*taken, JobStatus::kInProgress);
  deleted->deleted = true;
  // Taken and queued again at the front: its old entry is stale, its new one is live.
  SetStatus(*requeued, JobStatus::kInProgress);
  SetStatus(*requeued, JobStatus::kInQueue);
  queue_.Push(requeued, true);
  EXPECT_EQ(queue_.QueuedIds(), (std::vector<std::string>{"re", "live"}));
  EXPECT_EQ(queue_.Pop(), requeued.get());
  EXPECT_EQ(queue_.Pop(), live.get());  // the stale entries before it are dropped on the way
  EXPECT_EQ(queue_.Pop(), nullptr);
}

TEST_F(EndpointQueueTest, CountsAndTheOldestNormalPriorityJob) {
  auto low = NewJob("low", 1, true), a = NewJob("a", 2), b = NewJob("b", 3);
  for (auto& j : {low, a, b}) queue_.Push(j, false);
  EXPECT_EQ(queue_.count(JobStatus::kInQueue), 3);
  EXPECT_EQ(queue_.queued_low(), 1);
  EXPECT_EQ(queue_.OldestNormalCreatedMs(), 2);
  SetStatus(*a, JobStatus::kInProgress);
  SetStatus(*low, JobStatus::kCancelled);
  EXPECT_EQ(queue_.count(JobStatus::kInQueue), 1);
  EXPECT_EQ(queue_.count(JobStatus::kInProgress), 1);
  EXPECT_EQ(queue_.count(JobStatus::kCancelled), 1);
  EXPECT_EQ(queue_.queued_low(), 0);
  EXPECT_EQ(queue_.OldestNormalCreatedMs(), 3);
  queue_.Clear();
  EXPECT_EQ(queue_.OldestNormalCreatedMs(), 0);
  EXPECT_EQ(queue_.Pop(), nullptr);
}

}  // namespace
}  // namespace gantry::jobs
