#include <algorithm>

#include "store/store.h"

namespace gantry::store {

Result<std::vector<JobRecord>> MemoryStore::LoadJobs() { return jobs_; }

Result<std::vector<ObjectRecord>> MemoryStore::LoadObjects(const std::string& kind) {
  std::vector<ObjectRecord> out;
  for (const auto& o : objects_) {
    if (o.kind == kind) out.push_back(o);
  }
  return out;
}

Result<std::vector<LogRecord>> MemoryStore::LoadLogs(size_t limit) {
  size_t from = logs_.size() > limit ? logs_.size() - limit : 0;
  return std::vector<LogRecord>(logs_.begin() + static_cast<std::ptrdiff_t>(from), logs_.end());
}

const JobRecord* MemoryStore::job(const std::string& id) const {
  for (const auto& j : jobs_) {
    if (j.id == id) return &j;
  }
  return nullptr;
}

void MemoryStore::Apply(const Mutation& m) {
  ++writes_;
  auto job_it = std::find_if(jobs_.begin(), jobs_.end(),
                             [&](const JobRecord& j) { return j.id == m.job.id; });
  auto obj_it = std::find_if(objects_.begin(), objects_.end(), [&](const ObjectRecord& o) {
    return o.kind == m.object.kind && o.id == m.object.id;
  });
  switch (m.op) {
    case Mutation::Op::kPutJob:
      if (job_it != jobs_.end())
        *job_it = m.job;
      else
        jobs_.push_back(m.job);
      break;
    case Mutation::Op::kUpdateJob:
      if (job_it != jobs_.end()) {
        std::string input = std::move(job_it->input);
        *job_it = m.job;
        job_it->input = std::move(input);
      }
      break;
    case Mutation::Op::kDeleteJob:
      if (job_it != jobs_.end()) jobs_.erase(job_it);
      break;
    case Mutation::Op::kPutObject:
      if (obj_it != objects_.end())
        *obj_it = m.object;
      else
        objects_.push_back(m.object);
      break;
    case Mutation::Op::kDeleteObject:
      if (obj_it != objects_.end()) objects_.erase(obj_it);
      break;
    case Mutation::Op::kAppendLog:
      logs_.push_back(m.log);
      break;
    case Mutation::Op::kTrimLogs:
      logs_.erase(std::remove_if(logs_.begin(), logs_.end(),
                                 [&](const LogRecord& l) { return l.seq < m.log.seq; }),
                  logs_.end());
      break;
  }
}

void MemoryStore::Write(std::vector<Mutation> mutations, std::function<void(Status)> done) {
  if (deferred_) {
    pending_.emplace_back(std::move(mutations), std::move(done));
    return;
  }
  for (const auto& m : mutations) Apply(m);
  if (done) done(Status::Ok());
}

void MemoryStore::FailDeferred(const Status& error) {
  auto pending = std::move(pending_);
  pending_.clear();
  for (auto& [muts, done] : pending) {
    if (done) done(error);
  }
}

void MemoryStore::FlushDeferred() {
  auto pending = std::move(pending_);
  pending_.clear();
  for (auto& [muts, done] : pending) {
    for (const auto& m : muts) Apply(m);
    if (done) done(Status::Ok());
  }
}

}  // namespace gantry::store
