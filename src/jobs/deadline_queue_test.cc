#include "jobs/deadline_queue.h"

#include <gtest/gtest.h>

#include <memory>
#include <utility>

namespace gantry::jobs {
namespace {

class DeadlineQueueTest : public ::testing::Test {
 protected:
  DeadlineQueueTest() {
    for (int i = 0; i < 2; ++i) {
      kinds_[i] = queue_.AddKind([this, i](const DeadlineQueue::Due& d) {
        fired_.push_back(std::to_string(i) + ":" + d.key + ":" + std::to_string(d.tag));
        whens_.push_back(d.when_ms);
      });
    }
  }

  int64_t Now() const { return clock_.NowMs(); }
  void Advance(int64_t ms) {
    clock_.Advance(ms);
    queue_.Tick();
  }

  FakeClock clock_;
  DeadlineQueue queue_{&clock_};
  DeadlineQueue::Kind kinds_[2];
  std::vector<std::string> fired_;
  std::vector<int64_t> whens_;
};

TEST_F(DeadlineQueueTest, FiresOnlyFromTickOnceDueWithItsKindKeyAndTag) {
  queue_.At(Now() + 100, kinds_[1], "job", 7);
  EXPECT_EQ(queue_.size(), 1u);
  Advance(99);
  EXPECT_TRUE(fired_.empty());
  clock_.Advance(1);  // due now, but nothing fires until Tick()
  EXPECT_TRUE(fired_.empty());
  queue_.Tick();
  EXPECT_EQ(fired_, std::vector<std::string>{"1:job:7"});
  EXPECT_EQ(queue_.size(), 0u);
  Advance(1000);
  EXPECT_EQ(fired_.size(), 1u);  // once
}

TEST_F(DeadlineQueueTest, DueOnesFireByDueTimeThenByArming) {
  const int64_t t = Now();
  queue_.At(t + 20, kinds_[0], "c", 0);
  queue_.At(t + 10, kinds_[1], "a", 0);
  queue_.At(t + 20, kinds_[1], "d", 0);
  queue_.At(t + 10, kinds_[0], "b", 0);
  Advance(50);
  EXPECT_EQ(fired_, (std::vector<std::string>{"1:a:0", "0:b:0", "0:c:0", "1:d:0"}));
  // Each is given the time it was due, not the time it fired.
  EXPECT_EQ(whens_, (std::vector<int64_t>{t + 10, t + 10, t + 20, t + 20}));
}

TEST_F(DeadlineQueueTest, HandleCancelsAndIsEmptiedWhenItFires) {
  Deadline a, b;
  queue_.At(Now() + 10, kinds_[0], "a", 0, &a);
  queue_.At(Now() + 10, kinds_[0], "b", 0, &b);
  EXPECT_TRUE(a.armed());
  a.Cancel();
  EXPECT_FALSE(a.armed());
  a.Cancel();  // no-op
  EXPECT_EQ(queue_.size(), 1u);
  Advance(10);
  EXPECT_EQ(fired_, std::vector<std::string>{"0:b:0"});
  EXPECT_FALSE(b.armed());
  b.Cancel();  // its deadline is gone already: nothing to erase
  EXPECT_EQ(queue_.size(), 0u);
}

TEST_F(DeadlineQueueTest, RearmingAHandleCancelsWhatItHeld) {
  Deadline h;
  queue_.At(Now() + 10, kinds_[0], "old", 0, &h);
  queue_.At(Now() + 20, kinds_[0], "new", 0, &h);
  EXPECT_EQ(queue_.size(), 1u);
  Advance(20);
  EXPECT_EQ(fired_, std::vector<std::string>{"0:new:0"});
}

TEST_F(DeadlineQueueTest, HandleFollowsItsOwnerWhenMovedAndCancelsWhenDestroyed) {
  std::vector<Deadline> owners;
  owners.reserve(1);
  owners.emplace_back();
  queue_.At(Now() + 10, kinds_[0], "moved", 0, &owners[0]);
  owners.emplace_back();  // grows: the handle moves to a new address
  owners.emplace_back();
  Deadline other = std::move(owners[0]);
  EXPECT_FALSE(owners[0].armed());
  EXPECT_TRUE(other.armed());
  Advance(10);
  EXPECT_EQ(fired_, std::vector<std::string>{"0:moved:0"});
  EXPECT_FALSE(other.armed());  // the queue emptied the handle at its new address

  {
    Deadline scoped;
    queue_.At(Now() + 10, kinds_[0], "scoped", 0, &scoped);
    EXPECT_EQ(queue_.size(), 1u);
  }
  EXPECT_EQ(queue_.size(), 0u);

  Deadline x, y;
  queue_.At(Now() + 10, kinds_[0], "x", 0, &x);
  queue_.At(Now() + 10, kinds_[0], "y", 0, &y);
  x = std::move(y);  // x's own deadline is cancelled; it holds y's
  EXPECT_EQ(queue_.size(), 1u);
  Advance(10);
  EXPECT_EQ(fired_.back(), "0:y:0");
  EXPECT_FALSE(x.armed());
}

TEST_F(DeadlineQueueTest, CallbackMayArmAndCancelDueOnesFireInTheSameTick) {
  Deadline later;
  queue_.At(Now() + 30, kinds_[1], "later", 0, &later);
  DeadlineQueue::Kind chain = queue_.AddKind([&](const DeadlineQueue::Due& d) {
    fired_.push_back("chain:" + d.key);
    later.Cancel();
    queue_.At(d.when_ms, kinds_[0], "now", 0);         // due already: fires in this Tick
    queue_.At(d.when_ms + 100, kinds_[0], "next", 0);  // not yet
  });
  queue_.At(Now() + 10, chain, "c", 0);
  Advance(50);
  EXPECT_EQ(fired_, (std::vector<std::string>{"chain:c", "0:now:0"}));
  EXPECT_EQ(queue_.size(), 1u);
  Advance(100);
  EXPECT_EQ(fired_.back(), "0:next:0");
}

TEST_F(DeadlineQueueTest, QueueMayGoBeforeItsHandles) {
  Deadline h;
  {
    FakeClock clock;
    DeadlineQueue q(&clock);
    DeadlineQueue::Kind k = q.AddKind([](const DeadlineQueue::Due&) {});
    q.At(clock.NowMs() + 10, k, "x", 0, &h);
    EXPECT_TRUE(h.armed());
  }
  EXPECT_FALSE(h.armed());
  h.Cancel();  // touches nothing
}

}  // namespace
}  // namespace gantry::jobs
