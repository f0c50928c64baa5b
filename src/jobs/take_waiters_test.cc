#include "jobs/take_waiters.h"

#include <gtest/gtest.h>

namespace gantry::jobs {
namespace {

class TakeWaitersTest : public ::testing::Test {
 protected:
  // Adds a waiter; its answer (the number of jobs) is appended to answers_ as "name:n".
  void Add(const std::string& name, const std::string& worker, int64_t wait_ms) {
    waiters_.Add(worker, 3, clock_.NowMs() + wait_ms, [this, name](std::vector<const Job*> js) {
      answers_.push_back(name + ":" + std::to_string(js.size()));
    });
  }

  void Advance(int64_t ms) {
    clock_.Advance(ms);
    deadlines_.Tick();
  }

  FakeClock clock_;
  DeadlineQueue deadlines_{&clock_};
  // The JobManager's part: the callback of the waits' kind finds the waiters by key.
  DeadlineQueue::Kind kind_ = deadlines_.AddKind([this](const DeadlineQueue::Due& d) {
    EXPECT_EQ(d.key, "ep");
    waiters_.Expire(d.tag);
  });
  TakeWaiters waiters_{&deadlines_, kind_, "ep"};
  std::vector<std::string> answers_;
};

TEST_F(TakeWaitersTest, PopFrontGivesTheOldestWithItsWaitCancelled) {
  Add("a", "w1", 1'000);
  Add("b", "w2", 1'000);
  ASSERT_EQ(waiters_.size(), 2u);
  TakeWaiters::Waiter w = waiters_.PopFront();
  EXPECT_EQ(w.worker_id, "w1");
  EXPECT_EQ(w.max, 3);
  EXPECT_FALSE(w.timer.armed());
  EXPECT_EQ(deadlines_.size(), 1u);
  Job job;
  w.cb({&job});
  EXPECT_EQ(answers_, std::vector<std::string>{"a:1"});
  EXPECT_EQ(waiters_.size(), 1u);
}

TEST_F(TakeWaitersTest, WaitRunsOutWithNoJobs) {
  Add("a", "w1", 1'000);
  Add("b", "w1", 2'000);
  Advance(1'000);
  EXPECT_EQ(answers_, std::vector<std::string>{"a:0"});
  EXPECT_EQ(waiters_.PopFront().worker_id, "w1");  // b is left
  EXPECT_TRUE(waiters_.empty());
  Advance(1'000);  // b's wait went with it
  EXPECT_EQ(answers_.size(), 1u);
}

TEST_F(TakeWaitersTest, DropAnswersOneWorkersWaitersAndKeepsTheOthersInOrder) {
  Add("a", "w1", 1'000);
  Add("b", "w2", 1'000);
  Add("c", "w1", 1'000);
  Add("d", "w3", 1'000);
  waiters_.Drop("w1");
  EXPECT_EQ(answers_, (std::vector<std::string>{"a:0", "c:0"}));
  EXPECT_EQ(deadlines_.size(), 2u);
  EXPECT_EQ(waiters_.PopFront().worker_id, "w2");
  EXPECT_EQ(waiters_.PopFront().worker_id, "w3");
}

TEST_F(TakeWaitersTest, DropAllAnswersEveryWaiter) {
  Add("a", "w1", 1'000);
  Add("b", "w2", 1'000);
  waiters_.DropAll();
  EXPECT_EQ(answers_, (std::vector<std::string>{"a:0", "b:0"}));
  EXPECT_TRUE(waiters_.empty());
  EXPECT_EQ(deadlines_.size(), 0u);
  Advance(1'000);
  EXPECT_EQ(answers_.size(), 2u);
}

}  // namespace
}  // namespace gantry::jobs
