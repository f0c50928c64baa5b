#pragma once
// The Store: durable state of the control plane. Jobs have their own table; the other
// kinds of object (endpoints, API keys, workers) are stored as JSON documents by kind and id.
//
// Writes are asynchronous and batched (group commit): Write() queues mutations and returns at
// once; `done` runs, through the executor given at construction, after the batch holding
// them is durable. Completions run in the order the writes were queued. Loads are for start-up.

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "common/status.h"

namespace gantry::store {

struct JobRecord {
  std::string id;
  std::string endpoint_id;
  std::string status;  // the jobs module's status names (IN_QUEUE, ...)
  std::string input;   // raw JSON text
  std::string webhook;
  std::string s3_config;  // raw JSON text or empty
  int64_t execution_timeout_ms = 0;
  int64_t ttl_ms = 0;
  bool low_priority = false;
  bool sync = false;  // submitted with runsync (shorter retention)
  int64_t created_ms = 0;
  int64_t started_ms = 0;
  int64_t completed_ms = 0;
  std::string worker_id;
  int attempts = 0;
  std::string output;  // raw JSON text or empty
  std::string error;   // raw JSON text or empty
  int64_t seq = 0;     // unique, increasing with submission: orders the queue, keys the record
};

struct ObjectRecord {
  std::string kind;  // "endpoint", "key", "worker"
  std::string id;
  std::string data;  // JSON text
};

// One line of a worker's output.
struct LogRecord {
  int64_t seq = 0;  // increasing; keys the record
  int64_t at_ms = 0;
  std::string endpoint_id;
  std::string worker_id;
  bool stderr_stream = false;
  std::string text;
};

struct Mutation {
  enum class Op {
    kPutJob,
    kUpdateJob,
    kDeleteJob,
    kPutObject,
    kDeleteObject,
    kAppendLog,
    kTrimLogs
  };
  Op op;
  JobRecord job;        // kPutJob (all fields), kUpdateJob (all but input), kDeleteJob (id, seq)
  ObjectRecord object;  // kPutObject, kDeleteObject (kind and id)
  LogRecord log;        // kAppendLog; kTrimLogs deletes the lines with seq < log.seq

  static Mutation PutJob(JobRecord j) { return {Op::kPutJob, std::move(j), {}, {}}; }
  static Mutation UpdateJob(JobRecord j) { return {Op::kUpdateJob, std::move(j), {}, {}}; }
  static Mutation DeleteJob(std::string id, int64_t seq) {
    JobRecord j;
    j.id = std::move(id);
    j.seq = seq;
    return {Op::kDeleteJob, std::move(j), {}, {}};
  }
  static Mutation PutObject(ObjectRecord o) { return {Op::kPutObject, {}, std::move(o), {}}; }
  static Mutation DeleteObject(std::string kind, std::string id) {
    return {Op::kDeleteObject, {}, ObjectRecord{std::move(kind), std::move(id), {}}, {}};
  }
  static Mutation AppendLog(LogRecord l) { return {Op::kAppendLog, {}, {}, std::move(l)}; }
  static Mutation TrimLogs(int64_t below_seq) {
    LogRecord l;
    l.seq = below_seq;
    return {Op::kTrimLogs, {}, {}, std::move(l)};
  }
};

using Executor = std::function<void(std::function<void()>)>;

// The completion of a write whose change the caller applied in memory before the write was
// committed: when the write fails, `undo` takes that change back first, so that a failed write
// changes nothing (the client is answered 503 and may retry); then `done` (may be empty). Both
// run where the store posts its completions (the owner's thread). `undo` must check that the
// state is still the one this write made: a later change is its own write's to keep or undo.
inline std::function<void(Status)> UndoOnFailure(std::function<void()> undo,
                                                 std::function<void(Status)> done) {
  return [undo = std::move(undo), done = std::move(done)](Status s) {
    if (!s.ok()) undo();
    if (done) done(std::move(s));
  };
}

class Store {
 public:
  virtual ~Store() = default;
  virtual Result<std::vector<JobRecord>> LoadJobs() = 0;
  virtual Result<std::vector<ObjectRecord>> LoadObjects(const std::string& kind) = 0;
  // The newest `limit` log lines, oldest first.
  virtual Result<std::vector<LogRecord>> LoadLogs(size_t limit) = 0;
  // Thread-safe. `done` may be empty.
  virtual void Write(std::vector<Mutation> mutations, std::function<void(Status)> done) = 0;
  // Makes every queued write durable and stops the writer. Later writes fail with Unavailable.
  virtual void Stop() = 0;
};

struct SqliteOptions {
  // fsync every commit (synchronous=FULL). false: synchronous=NORMAL, which survives a crash
  // of the process but not of the machine. Default: true.
  bool sync_full = true;
  // Most mutations in one transaction. Default: 4096.
  size_t max_batch = 4096;
  // How often the checkpointer copies the WAL into the database. Default: 200 ms.
  int checkpoint_interval_ms = 200;
  // WAL frames (a page, 4 KiB, each) above which the checkpointer also makes the WAL start
  // over from its beginning, holding off commits while it copies what is left. Default: 1024.
  int wal_restart_frames = 1024;
};

// Opens (creating if needed) the SQLite database at `path` in WAL mode.
Result<std::unique_ptr<Store>> OpenSqliteStore(const std::string& path, SqliteOptions options,
                                               Executor executor);

// An in-memory Store for tests: writes apply at once and `done` runs inline, unless
// set_deferred(true), when they wait for FlushDeferred(). Not thread-safe.
class MemoryStore final : public Store {
 public:
  Result<std::vector<JobRecord>> LoadJobs() override;
  Result<std::vector<ObjectRecord>> LoadObjects(const std::string& kind) override;
  Result<std::vector<LogRecord>> LoadLogs(size_t limit) override;
  void Write(std::vector<Mutation> mutations, std::function<void(Status)> done) override;
  void Stop() override {}

  void set_deferred(bool deferred) { deferred_ = deferred; }
  void FlushDeferred();
  // Completes the deferred writes with `error`, applying none of them (a commit that failed).
  void FailDeferred(const Status& error);
  size_t job_count() const { return jobs_.size(); }
  const JobRecord* job(const std::string& id) const;
  size_t writes() const { return writes_; }

 private:
  void Apply(const Mutation& m);
  std::vector<JobRecord> jobs_;
  std::vector<ObjectRecord> objects_;
  std::vector<LogRecord> logs_;
  bool deferred_ = false;
  size_t writes_ = 0;
  std::vector<std::pair<std::vector<Mutation>, std::function<void(Status)>>> pending_;
};

}  // namespace gantry::store
