#include "jobs/stops.h"

#include <gtest/gtest.h>

#include <optional>

namespace gantry::jobs {
namespace {

using Ids = std::vector<std::string>;

class StopsTest : public ::testing::Test {
 protected:
  StopsTest()
      : stops_(&clock_, &deadlines_, Stops::Options{kGraceMs, kReofferMs},
               [this](const std::string& worker, const std::string& why) {
                 killed_.push_back(worker);
                 why_ = why;
               }) {}

  // Polls for the worker; the answer, once there is one, lands in `*out`.
  void Poll(const std::string& worker, int64_t wait_ms, std::optional<Ids>* out) {
    out->reset();
    stops_.Poll(worker, wait_ms, [out](Ids ids) { *out = std::move(ids); });
  }

  void Advance(int64_t ms) {
    clock_.Advance(ms);
    deadlines_.Tick();
  }

  static constexpr int64_t kGraceMs = 30'000;
  static constexpr int64_t kReofferMs = 1'000;
  FakeClock clock_;
  DeadlineQueue deadlines_{&clock_};
  Stops stops_;
  Ids killed_;
  std::string why_;
};

TEST_F(StopsTest, ImmediatePollGetsDueStopsAndOnlyThoseOfItsWorker) {
  stops_.Request("j1", "w1");
  stops_.Request("j2", "w2");
  std::optional<Ids> got;
  Poll("w1", 0, &got);
  EXPECT_EQ(got, Ids{"j1"});
  Poll("w1", 0, &got);  // offered just now: not due again yet
  EXPECT_EQ(got, Ids{});
  Advance(kReofferMs);
  Poll("w1", 0, &got);
  EXPECT_EQ(got, Ids{"j1"});
  EXPECT_EQ(stops_.size(), 2u);
}

TEST_F(StopsTest, RequestIsOfferedAtOnceToAWaitingPoll) {
  std::optional<Ids> got;
  Poll("w1", 60'000, &got);
  EXPECT_FALSE(got);
  const size_t armed = deadlines_.size();
  stops_.Request("j1", "w1");
  EXPECT_EQ(got, Ids{"j1"});
  EXPECT_EQ(deadlines_.size(), armed);  // the poll's wait went, the stop's grace came
}

TEST_F(StopsTest, PollWaitEndsWithNothing) {
  std::optional<Ids> got;
  Poll("w1", 5'000, &got);
  Advance(4'999);
  EXPECT_FALSE(got);
  Advance(1);
  EXPECT_EQ(got, Ids{});
  EXPECT_EQ(deadlines_.size(), 0u);
}

TEST_F(StopsTest, NewerPollAnswersTheOlderWithNothing) {
  std::optional<Ids> first, second;
  Poll("w1", 60'000, &first);
  Poll("w1", 60'000, &second);
  EXPECT_EQ(first, Ids{});
  EXPECT_FALSE(second);
  EXPECT_EQ(deadlines_.size(), 1u);  // only the newer poll's wait
  stops_.Request("j1", "w1");
  EXPECT_EQ(second, Ids{"j1"});
}

TEST_F(StopsTest, StandingStopIsOfferedAgainToAWaitingPoll) {
  stops_.Request("j1", "w1");
  std::optional<Ids> got;
  Poll("w1", 0, &got);
  ASSERT_EQ(got, Ids{"j1"});
  Advance(400);
  Poll("w1", 60'000, &got);  // waits: the re-offer comes due in 600 ms
  EXPECT_FALSE(got);
  Advance(599);
  EXPECT_FALSE(got);
  Advance(1);
  EXPECT_EQ(got, Ids{"j1"});
}

TEST_F(StopsTest, GraceKillsTheWorkerOfAStopThatStands) {
  stops_.Request("j1", "w1");
  Advance(kGraceMs - 1);
  EXPECT_TRUE(killed_.empty());
  Advance(1);
  EXPECT_EQ(killed_, Ids{"w1"});
  EXPECT_EQ(why_, "did not stop job j1 within 30000 ms");
  EXPECT_EQ(stops_.size(), 0u);
}

TEST_F(StopsTest, RequestAgainStartsTheGraceAnew) {
  stops_.Request("j1", "w1");
  Advance(10'000);
  stops_.Request("j1", "w1");
  Advance(kGraceMs - 10'000);  // the first request's grace: no longer its stop's
  EXPECT_TRUE(killed_.empty());
  Advance(10'000);
  EXPECT_EQ(killed_, Ids{"w1"});
}

TEST_F(StopsTest, StopEndsWhenAnsweredClearedOrItsWorkerIsLost) {
  stops_.Request("a", "w1");
  stops_.Request("b", "w1");
  stops_.Request("c", "w2");
  stops_.Answered("w2", "a");  // another worker's answer: the stop stands
  EXPECT_EQ(stops_.size(), 3u);
  stops_.Answered("w1", "a");
  stops_.Clear("b");
  std::optional<Ids> got;
  Poll("w2", 60'000, &got);
  ASSERT_EQ(got, Ids{"c"});
  Poll("w2", 60'000, &got);
  stops_.WorkerLost("w2");
  EXPECT_EQ(got, Ids{});  // its waiting poll is answered
  EXPECT_EQ(stops_.size(), 0u);
  Advance(kGraceMs);
  EXPECT_TRUE(killed_.empty());
}

TEST_F(StopsTest, PingEndsOfferedStopsOfJobsTheWorkerNoLongerRuns) {
  stops_.Request("offered", "w1");
  stops_.Request("listed", "w1");
  std::optional<Ids> got;
  Poll("w1", 0, &got);
  ASSERT_EQ(got->size(), 2u);
  stops_.Request("new", "w1");  // not offered yet: its worker may not know of it
  stops_.Request("other", "w2");
  stops_.Ping("w1", {"listed"});
  EXPECT_EQ(stops_.size(), 3u);
  Advance(kGraceMs);
  EXPECT_EQ(killed_, (Ids{"w1", "w1", "w2"}));  // listed, new, other
}

TEST_F(StopsTest, JobWithNoWorkerHasNoStop) {
  stops_.Request("j1", "");
  EXPECT_EQ(stops_.size(), 0u);
  EXPECT_EQ(deadlines_.size(), 0u);
}

}  // namespace
}  // namespace gantry::jobs
