#include "scheduling/metering.h"

#include <algorithm>

namespace gantry::scheduling {

PriceTable DefaultPrices() {
  // USD per second per GPU (flex workers). The types match by substring like placement does.
  return {
      {"cpu", 0.000046},  {"A4000", 0.00016},     {"A4500", 0.00019}, {"L4", 0.00019},
      {"A5000", 0.00019}, {"3090", 0.00019},      {"4090", 0.00031},  {"A40", 0.00034},
      {"A6000", 0.00034}, {"L40", 0.00053},       {"L40S", 0.00053},  {"6000 Ada", 0.00053},
      {"A100", 0.00076},  {"A100-80GB", 0.00076}, {"H100", 0.00116},  {"H200", 0.00155},
      {"B200", 0.00240},
  };
}

Metering::Metering(const Clock* clock, store::Store* store, PriceTable prices,
                   jobs::JobManager* jobs, WorkerRegistry* workers)
    : clock_(clock),
      store_(store),
      prices_(std::move(prices)),
      job_manager_(jobs),
      worker_registry_(workers) {
  if (job_manager_) job_manager_->AddObserver(this);
  if (worker_registry_) worker_registry_->AddObserver(this);
}

Metering::~Metering() {
  if (job_manager_) job_manager_->RemoveObserver(this);
  if (worker_registry_) worker_registry_->RemoveObserver(this);
}

Status Metering::Load() {
  auto objs = store_->LoadObjects("usage");
  if (!objs.ok()) return objs.status();
  for (const auto& o : *objs) {
    auto v = ParseJson(o.data);
    if (!v.ok() || !v->is_object()) continue;
    const auto& obj = v->as_object();
    auto str = [&](const char* k) {
      const json::value* f = Find(obj, k);
      return f && f->is_string() ? std::string(f->as_string()) : std::string();
    };
    auto num = [&](const char* k) {
      const json::value* f = Find(obj, k);
      return f ? AsInt(*f).value_or(0) : 0;
    };
    if (str("kind") == "jobs") {
      jobs_[str("endpointId")] = {num("count"), num("executionMs")};
      continue;
    }
    WorkerUsage u{o.id,           str("endpointId"),
                  str("gpuType"), static_cast<int>(num("gpuCount")),
                  num("startMs"), num("endMs")};
    // A worker still running when the server stopped is billed until the server's restart.
    if (u.end_ms == 0) u.end_ms = clock_->NowMs();
    workers_[o.id] = u;
  }
  return Status::Ok();
}

void Metering::Save(const WorkerUsage& u) {
  json::object o{{"kind", "worker"},        {"endpointId", u.endpoint_id}, {"gpuType", u.gpu_type},
                 {"gpuCount", u.gpu_count}, {"startMs", u.start_ms},       {"endMs", u.end_ms}};
  store_->Write({store::Mutation::PutObject({"usage", u.worker_id, ToJson(o)})}, {});
}

void Metering::SaveJobs(const std::string& endpoint_id) {
  const JobTotals& t = jobs_[endpoint_id];
  json::object o{{"kind", "jobs"},
                 {"endpointId", endpoint_id},
                 {"count", t.count},
                 {"executionMs", t.execution_ms}};
  store_->Write({store::Mutation::PutObject({"usage", "jobs:" + endpoint_id, ToJson(o)})}, {});
}

void Metering::WorkerStarted(const WorkerUsage& u) {
  if (workers_.count(u.worker_id)) return;
  workers_[u.worker_id] = u;
  Save(u);
}

void Metering::WorkerStopped(const std::string& worker_id) {
  auto it = workers_.find(worker_id);
  if (it == workers_.end() || it->second.end_ms != 0) return;
  it->second.end_ms = std::max(clock_->NowMs(), it->second.start_ms);
  Save(it->second);
}

void Metering::JobFinished(const std::string& endpoint_id, int64_t execution_ms) {
  JobTotals& t = jobs_[endpoint_id];
  t.count++;
  t.execution_ms += std::max<int64_t>(0, execution_ms);
  dirty_jobs_.insert(endpoint_id);
}

void Metering::Flush() {
  for (const auto& ep : dirty_jobs_) SaveJobs(ep);
  dirty_jobs_.clear();
}

int64_t Metering::BilledSeconds(int64_t start_ms, int64_t end_ms) {
  int64_t ms = std::max<int64_t>(0, end_ms - start_ms);
  return (ms + 999) / 1000;
}

double Metering::PricePerSecond(const std::string& gpu_type) const {
  if (auto it = prices_.find(gpu_type); it != prices_.end()) return it->second;
  // An NVML model name ("NVIDIA H100 80GB HBM3"): the longest listed type it contains.
  double price = 0;
  size_t best = 0;
  for (const auto& [type, p] : prices_) {
    if (type.size() > best && gpu_type.find(type) != std::string::npos) {
      best = type.size();
      price = p;
    }
  }
  return price;
}

json::object Metering::Report(int64_t since_ms, const std::string& endpoint_id) const {
  int64_t now = clock_->NowMs();
  struct Line {
    int64_t seconds = 0;
    double cost = 0;
    int64_t workers = 0;
  };
  std::map<std::tuple<std::string, std::string, int>, Line> lines;
  json::array workers;
  int64_t total_seconds = 0;
  double total_cost = 0;
  for (const auto& [id, u] : workers_) {
    if (!endpoint_id.empty() && u.endpoint_id != endpoint_id) continue;
    int64_t end = u.end_ms ? u.end_ms : now;
    if (end < since_ms) continue;
    int64_t seconds = BilledSeconds(u.start_ms, end);
    int units = std::max(1, u.gpu_type == "cpu" ? 1 : u.gpu_count);
    double cost = static_cast<double>(seconds) * units * PricePerSecond(u.gpu_type);
    Line& l = lines[{u.endpoint_id, u.gpu_type, u.gpu_count}];
    l.seconds += seconds;
    l.cost += cost;
    l.workers++;
    total_seconds += seconds;
    total_cost += cost;
    workers.push_back(json::object{{"workerId", id},
                                   {"endpointId", u.endpoint_id},
                                   {"gpuType", u.gpu_type},
                                   {"gpuCount", u.gpu_count},
                                   {"startMs", u.start_ms},
                                   {"endMs", u.end_ms ? json::value(u.end_ms) : json::value()},
                                   {"billedSeconds", seconds},
                                   {"cost", cost}});
  }
  json::array by_endpoint;
  for (const auto& [key, l] : lines) {
    by_endpoint.push_back(json::object{{"endpointId", std::get<0>(key)},
                                       {"gpuType", std::get<1>(key)},
                                       {"gpuCount", std::get<2>(key)},
                                       {"workers", l.workers},
                                       {"billedSeconds", l.seconds},
                                       {"cost", l.cost}});
  }
  json::array jobs;
  for (const auto& [ep, t] : jobs_) {
    if (!endpoint_id.empty() && ep != endpoint_id) continue;
    jobs.push_back(
        json::object{{"endpointId", ep}, {"jobs", t.count}, {"executionMs", t.execution_ms}});
  }
  return json::object{{"since", since_ms},
                      {"until", now},
                      {"currency", "USD"},
                      {"byEndpoint", std::move(by_endpoint)},
                      {"jobs", std::move(jobs)},
                      {"workers", std::move(workers)},
                      {"totalBilledSeconds", total_seconds},
                      {"totalCost", total_cost}};
}

}  // namespace gantry::scheduling
