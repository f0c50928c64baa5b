#pragma once
// Metering: per-second worker time by GPU type and count, under RunPod's billing rule (each
// worker's time from start to stop, rounded up to the second), and per-job execution time.
// Records are kept in the store ("usage" objects), so usage survives restarts.
//
// Threading: loop thread only.

#include <map>
#include <set>
#include <string>
#include <vector>

#include "common/env.h"
#include "common/json.h"
#include "jobs/job_manager.h"
#include "scheduling/registry.h"
#include "store/store.h"

namespace gantry::scheduling {

// Price per second of one GPU of a type ("cpu": per worker-second of a CPU worker).
using PriceTable = std::map<std::string, double>;

// RunPod's public serverless (flex) prices per second, by GPU type, as published in 2025.
// Override with `gantry server --prices FILE` (a JSON object of type -> USD per second).
PriceTable DefaultPrices();

struct WorkerUsage {
  std::string worker_id;
  std::string endpoint_id;
  std::string gpu_type;
  int gpu_count = 0;
  int64_t start_ms = 0;
  int64_t end_ms = 0;  // 0 while running
};

// Observes `jobs` (finished jobs) and `workers` (stopped workers) when given, from its
// construction to its destruction; the scheduler tells it of started workers.
class Metering : public jobs::JobObserver, public WorkerObserver {
 public:
  Metering(const Clock* clock, store::Store* store, PriceTable prices,
           jobs::JobManager* jobs = nullptr, WorkerRegistry* workers = nullptr);
  ~Metering() override;
  Metering(const Metering&) = delete;
  Metering& operator=(const Metering&) = delete;
  Status Load();
  void SetPrices(PriceTable prices) { prices_ = std::move(prices); }
  // A worker process started / stopped.
  void WorkerStarted(const WorkerUsage& u);
  void WorkerStopped(const std::string& worker_id);
  // A job finished after running `execution_ms` on a worker. Counted in memory; Flush() writes
  // the totals (the server flushes every second, so a job does not cost a second write).
  void JobFinished(const std::string& endpoint_id, int64_t execution_ms);
  void Flush();
  void OnJobFinished(const std::string& endpoint_id, int64_t execution_ms) override {
    JobFinished(endpoint_id, execution_ms);
  }
  void OnWorkerStopped(const WorkerInfo& w) override { WorkerStopped(w.id); }
  // Usage since `since_ms` (0: all), for one endpoint or all (""), as /v1/usage returns it.
  json::object Report(int64_t since_ms, const std::string& endpoint_id) const;
  // Seconds billed for a worker that ran from start to end: rounded up to the second.
  static int64_t BilledSeconds(int64_t start_ms, int64_t end_ms);
  double PricePerSecond(const std::string& gpu_type) const;

 private:
  void Save(const WorkerUsage& u);
  void SaveJobs(const std::string& endpoint_id);
  const Clock* clock_;
  store::Store* store_;
  PriceTable prices_;
  jobs::JobManager* job_manager_;               // observed; may be null
  WorkerRegistry* worker_registry_;             // observed; may be null
  std::map<std::string, WorkerUsage> workers_;  // by worker id
  struct JobTotals {
    int64_t count = 0;
    int64_t execution_ms = 0;
  };
  std::map<std::string, JobTotals> jobs_;  // by endpoint id, since the data dir was made
  std::set<std::string> dirty_jobs_;       // endpoints whose totals are not written yet
};

}  // namespace gantry::scheduling
