#include "jobs/webhooks.h"

#include <gtest/gtest.h>

#include <map>

namespace gantry::jobs {
namespace {

class WebhooksTest : public ::testing::Test {
 protected:
  WebhooksTest()
      : webhooks_(
            &clock_, &deadlines_, Webhooks::Options{2, 10'000},
            [this](const std::string& url, std::string body, std::function<void(bool)> done) {
              posts_.push_back({url, body});
              if (answer_at_once_) {
                done(ok_);
              } else {
                pending_.push_back(std::move(done));
              }
            },
            [this](const std::string& id) -> const Job* {
              auto it = jobs_.find(id);
              return it == jobs_.end() ? nullptr : &it->second;
            }) {}

  Job& AddJob(const std::string& id, const std::string& webhook) {
    Job& j = jobs_[id];
    j.rec.id = id;
    j.rec.webhook = webhook;
    j.rec.created_ms = clock_.NowMs();
    j.rec.completed_ms = clock_.NowMs();
    j.status = JobStatus::kCompleted;
    return j;
  }

  void Advance(int64_t ms) {
    clock_.Advance(ms);
    deadlines_.Tick();
  }

  FakeClock clock_;
  DeadlineQueue deadlines_{&clock_};
  std::map<std::string, Job> jobs_;
  bool ok_ = true;
  bool answer_at_once_ = true;
  std::vector<std::pair<std::string, std::string>> posts_;  // (url, body)
  std::vector<std::function<void(bool)>> pending_;
  Webhooks webhooks_;
};

TEST_F(WebhooksTest, PostsTheStatusObjectToTheJobsWebhookOnce) {
  Job& j = AddJob("j1", "http://hook.example/a");
  webhooks_.Send(j);
  ASSERT_EQ(posts_.size(), 1u);
  EXPECT_EQ(posts_[0].first, "http://hook.example/a");
  EXPECT_EQ(posts_[0].second, StatusJson(j, clock_.NowMs()));
  Advance(60'000);
  EXPECT_EQ(posts_.size(), 1u);
  EXPECT_EQ(deadlines_.size(), 0u);
}

TEST_F(WebhooksTest, JobWithoutWebhookPostsNothing) {
  webhooks_.Send(AddJob("j1", ""));
  EXPECT_TRUE(posts_.empty());
}

TEST_F(WebhooksTest, FailureIsRetriedTwiceRetryMsApartWithTheJobAsItIsThen) {
  ok_ = false;
  Job& j = AddJob("j1", "http://hook.example/a");
  webhooks_.Send(j);
  Advance(9'999);
  EXPECT_EQ(posts_.size(), 1u);
  j.rec.output = "42";
  Advance(1);
  ASSERT_EQ(posts_.size(), 2u);
  EXPECT_NE(posts_[1].second.find(R"("output":42)"), std::string::npos);
  Advance(10'000);
  EXPECT_EQ(posts_.size(), 3u);
  Advance(60'000);
  EXPECT_EQ(posts_.size(), 3u);  // the first try and two retries
  EXPECT_EQ(deadlines_.size(), 0u);
}

TEST_F(WebhooksTest, RetryDelayCountsFromTheFailedAnswer) {
  answer_at_once_ = false;
  ok_ = false;
  webhooks_.Send(AddJob("j1", "http://hook.example/a"));
  Advance(7'000);  // the post takes 7 s (the Poster's timeout is its own)
  ASSERT_EQ(pending_.size(), 1u);
  pending_[0](false);
  Advance(9'999);
  EXPECT_EQ(posts_.size(), 1u);
  Advance(1);
  EXPECT_EQ(posts_.size(), 2u);
  pending_[1](true);  // delivered: no more retries
  Advance(60'000);
  EXPECT_EQ(posts_.size(), 2u);
}

TEST_F(WebhooksTest, NoRetryForAJobDeletedMeanwhile) {
  ok_ = false;
  webhooks_.Send(AddJob("j1", "http://hook.example/a"));
  jobs_.erase("j1");
  Advance(10'000);
  EXPECT_EQ(posts_.size(), 1u);
  EXPECT_EQ(deadlines_.size(), 0u);
}

}  // namespace
}  // namespace gantry::jobs
