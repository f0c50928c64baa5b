#include "jobs/job_index.h"

#include <gtest/gtest.h>

#include <memory>

namespace gantry::jobs {
namespace {

std::vector<int64_t> Seqs(const JobPage& p) {
  std::vector<int64_t> out;
  for (const Job* j : p.jobs) out.push_back(j->rec.seq);
  return out;
}

TEST(JobIndexTest, PagesNewestFirstPerEndpoint) {
  std::vector<std::unique_ptr<Job>> jobs;
  JobIndex index;
  for (int64_t seq = 1; seq <= 7; ++seq) {
    auto j = std::make_unique<Job>();
    j->rec.seq = seq;
    j->rec.endpoint_id = seq % 2 ? "odd" : "even";
    index.Add(j.get());
    jobs.push_back(std::move(j));
  }
  JobPage p = index.Recent("odd", 2, 0);
  EXPECT_EQ(Seqs(p), (std::vector<int64_t>{7, 5}));
  EXPECT_EQ(p.next, 5);
  p = index.Recent("odd", 2, p.next);
  EXPECT_EQ(Seqs(p), (std::vector<int64_t>{3, 1}));
  EXPECT_EQ(p.next, 0);  // nothing older
  EXPECT_EQ(Seqs(index.Recent("even", 10, 0)), (std::vector<int64_t>{6, 4, 2}));
  EXPECT_EQ(index.Recent("even", 10, 0).next, 0);
  EXPECT_TRUE(index.Recent("none", 10, 0).jobs.empty());
  EXPECT_TRUE(index.Recent("odd", 0, 0).jobs.empty());
  // A cursor whose job is gone still pages from where it was.
  index.Remove(jobs[4].get());  // seq 5
  EXPECT_EQ(Seqs(index.Recent("odd", 10, 5)), (std::vector<int64_t>{3, 1}));
  EXPECT_EQ(Seqs(index.Recent("odd", 10, 0)), (std::vector<int64_t>{7, 3, 1}));
  EXPECT_EQ(index.size("odd"), 3u);
  for (auto& j : jobs) index.Remove(j.get());
  EXPECT_EQ(index.size("odd"), 0u);
  EXPECT_TRUE(index.Recent("even", 10, 0).jobs.empty());
}

}  // namespace
}  // namespace gantry::jobs
