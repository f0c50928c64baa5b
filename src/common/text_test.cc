#include "common/text.h"

#include <gtest/gtest.h>

namespace gantry {
namespace {

TEST(EditDistanceTest, CountsEditsAndSwapsIgnoringCase) {
  EXPECT_EQ(EditDistance("", ""), 0u);
  EXPECT_EQ(EditDistance("abc", ""), 3u);
  EXPECT_EQ(EditDistance("", "abc"), 3u);
  EXPECT_EQ(EditDistance("workersMax", "workersMax"), 0u);
  EXPECT_EQ(EditDistance("workersMaxx", "workersMax"), 1u);  // an insertion
  EXPECT_EQ(EditDistance("workrsMax", "workersMax"), 1u);    // a deletion
  EXPECT_EQ(EditDistance("workersMux", "workersMax"), 1u);   // a substitution
  EXPECT_EQ(EditDistance("wokrersMax", "workersMax"), 1u);   // a swap
  EXPECT_EQ(EditDistance("WORKERSMAX", "workersMax"), 0u);
  EXPECT_EQ(EditDistance("kitten", "sitting"), 3u);
}

TEST(DidYouMeanTest, SuggestsTheNearestCandidate) {
  const std::vector<std::string_view> fields = {"id",         "name", "workersMin",
                                                "workersMax", "cpu",  "gpuCount"};
  EXPECT_EQ(DidYouMean("workersMaxx", fields), "workersMax");
  EXPECT_EQ(DidYouMean("workers_max", fields), "workersMax");
  EXPECT_EQ(DidYouMean("workersmin", fields), "workersMin");  // case alone
  EXPECT_EQ(DidYouMean("GPUCOUNT", fields), "gpuCount");
  EXPECT_EQ(DidYouMean("nmae", fields), "name");
  EXPECT_EQ(DidYouMean("gpu", fields), "cpu");
  // workersMix is one edit from both: the first candidate wins.
  EXPECT_EQ(DidYouMean("workersMix", fields), "workersMin");
}

TEST(DidYouMeanTest, NothingWhenNoneIsNearOrTheNameIsACandidate) {
  const std::vector<std::string_view> fields = {"id", "name", "workersMax"};
  EXPECT_EQ(DidYouMean("workersMax", fields), "");
  EXPECT_EQ(DidYouMean("replicas", fields), "");
  EXPECT_EQ(DidYouMean("x", fields), "");   // short names: one edit at most
  EXPECT_EQ(DidYouMean("ab", fields), "");  // two from "id"
  EXPECT_EQ(DidYouMean("ix", fields), "id");
  EXPECT_EQ(DidYouMean("anything", {}), "");
}

}  // namespace
}  // namespace gantry
