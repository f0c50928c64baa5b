#include "jobs/leases.h"

#include <gtest/gtest.h>

namespace gantry::jobs {
namespace {

using Ids = std::vector<std::string>;

TEST(LeasesTest, HoldAndReleaseTrackEachWorkersJobs) {
  Leases l;
  l.Hold("w1", "b");
  l.Hold("w1", "a");
  l.Hold("w2", "c");
  EXPECT_EQ(l.HeldBy("w1"), (Ids{"a", "b"}));
  EXPECT_EQ(l.HeldCount("w1"), 2u);
  EXPECT_EQ(l.HeldCount("w3"), 0u);
  EXPECT_TRUE(l.HeldBy("w3").empty());
  l.Release("w1", "a", 100);
  EXPECT_EQ(l.HeldBy("w1"), Ids{"b"});
  EXPECT_EQ(l.HeldBy("w2"), Ids{"c"});
}

TEST(LeasesTest, IdleSinceTheLastRelease) {
  Leases l;
  EXPECT_EQ(l.IdleSince("w1"), 0);  // never held a job
  l.Hold("w1", "a");
  l.Hold("w1", "b");
  EXPECT_EQ(l.IdleSince("w1"), -1);
  l.Release("w1", "a", 100);
  EXPECT_EQ(l.IdleSince("w1"), -1);  // still holds b
  l.Release("w1", "b", 250);
  EXPECT_EQ(l.IdleSince("w1"), 250);
  l.Release("w1", "gone", 400);  // a job it no longer held: still activity
  EXPECT_EQ(l.IdleSince("w1"), 400);
  l.Forget("w1");
  EXPECT_EQ(l.IdleSince("w1"), 0);
}

}  // namespace
}  // namespace gantry::jobs
