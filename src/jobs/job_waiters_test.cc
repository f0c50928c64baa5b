#include "jobs/job_waiters.h"

#include <gtest/gtest.h>

#include <map>

namespace gantry::jobs {
namespace {

class JobWaitersTest : public ::testing::Test {
 protected:
  JobWaitersTest() {
    jobs_["j1"].rec.id = "j1";
    jobs_["j2"].rec.id = "j2";
  }

  // Waits for the job; each answer is appended to answers_ as "tag:job id" ("tag:null").
  void Wait(const std::string& job_id, int64_t wait_ms, const std::string& tag) {
    waiters_.Add(job_id, clock_.NowMs() + wait_ms, [this, tag](const Job* j) {
      answers_.push_back(tag + ":" + (j ? j->rec.id : "null"));
    });
  }

  void Advance(int64_t ms) {
    clock_.Advance(ms);
    deadlines_.Tick();
  }

  FakeClock clock_;
  DeadlineQueue deadlines_{&clock_};
  std::map<std::string, Job> jobs_;
  JobWaiters waiters_{&deadlines_, [this](const std::string& id) -> const Job* {
                        auto it = jobs_.find(id);
                        return it == jobs_.end() ? nullptr : &it->second;
                      }};
  std::vector<std::string> answers_;
};

TEST_F(JobWaitersTest, NotifyAnswersEveryWaiterOfTheJobOnceInOrder) {
  Wait("j1", 1'000, "a");
  Wait("j2", 1'000, "other");
  Wait("j1", 5'000, "b");
  EXPECT_EQ(waiters_.size(), 2u);
  waiters_.Notify("j1", &jobs_["j1"]);
  EXPECT_EQ(answers_, (std::vector<std::string>{"a:j1", "b:j1"}));
  EXPECT_EQ(deadlines_.size(), 1u);  // only j2's waiter's
  waiters_.Notify("j1", &jobs_["j1"]);
  Advance(5'000);
  EXPECT_EQ(answers_, (std::vector<std::string>{"a:j1", "b:j1", "other:j2"}));
  EXPECT_EQ(waiters_.size(), 0u);
}

TEST_F(JobWaitersTest, WaitRunsOutWithTheJobAsItIs) {
  Wait("j1", 1'000, "short");
  Wait("j1", 3'000, "long");
  Advance(999);
  EXPECT_TRUE(answers_.empty());
  Advance(1);
  EXPECT_EQ(answers_, std::vector<std::string>{"short:j1"});
  EXPECT_EQ(waiters_.size(), 1u);
  Advance(2'000);
  EXPECT_EQ(answers_, (std::vector<std::string>{"short:j1", "long:j1"}));
  EXPECT_EQ(waiters_.size(), 0u);
  EXPECT_EQ(deadlines_.size(), 0u);
}

TEST_F(JobWaitersTest, DeletedJobAnswersNull) {
  Wait("j1", 1'000, "a");
  waiters_.Notify("j1", nullptr);
  EXPECT_EQ(answers_, std::vector<std::string>{"a:null"});
  Advance(1'000);
  EXPECT_EQ(answers_.size(), 1u);
}

}  // namespace
}  // namespace gantry::jobs
