#pragma once
// JobManagerTest: a JobManager on an in-memory store and a fake clock, with what it tells its
// observers recorded (job_manager_test.cc, job_manager_limits_test.cc).
#include <gtest/gtest.h>

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "jobs/job_manager.h"

namespace gantry::jobs {

class JobManagerTest : public ::testing::Test, public JobObserver {
 protected:
  JobManagerTest() { Reset(); }

  // What the JobManager tells its observers, recorded.
  void OnJobQueued(const std::string& endpoint_id) override { queued_.push_back(endpoint_id); }
  void OnJobFinished(const std::string& endpoint_id, int64_t execution_ms) override {
    finished_.push_back({endpoint_id, execution_ms});
  }
  void OnWorkerOverdue(const std::string& worker, const std::string& why) override {
    killed_.push_back(worker);
  }

  void Reset() {
    jm_ = std::make_unique<JobManager>(
        &clock_, &store_, options_,
        [this](const std::string& url, std::string body, std::function<void(bool)> done) {
          posts_.push_back({url, body});
          done(webhook_ok_);
        });
    jm_->AddObserver(this);
    QueueConfig qc;
    qc.max_attempts = 2;
    jm_->SetEndpoint("ep", qc);
  }

  std::string Submit(const std::string& input = R"({"n":1})", bool sync = false) {
    SubmitRequest r;
    r.endpoint_id = "ep";
    r.input = input;
    r.sync = sync;
    auto j = jm_->Submit(r, {});
    EXPECT_TRUE(j.ok()) << j.status().ToString();
    return (*j)->rec.id;
  }

  std::vector<std::string> Take(const std::string& worker, int max = 1) {
    std::vector<std::string> ids;
    jm_->Take("ep", worker, max, 0, [&](std::vector<const Job*> js) {
      for (auto* j : js) ids.push_back(j->rec.id);
    });
    return ids;
  }

  JobStatus StatusOf(const std::string& id) { return jm_->Get(id)->status; }

  void Advance(int64_t ms) {
    clock_.Advance(ms);
    jm_->Tick();
  }

  FakeClock clock_;
  store::MemoryStore store_;
  JobsOptions options_;
  std::unique_ptr<JobManager> jm_;
  bool webhook_ok_ = true;
  std::vector<std::pair<std::string, std::string>> posts_;
  std::vector<std::string> killed_;
  std::vector<std::string> queued_;
  std::vector<std::pair<std::string, int64_t>> finished_;
};

}  // namespace gantry::jobs
