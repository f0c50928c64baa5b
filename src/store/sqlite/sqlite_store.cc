// SQLite implementation of Store: WAL mode, one writer thread, group commit.
#include <fcntl.h>
#include <sqlite3.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <mutex>
#include <thread>

#include "common/log.h"
#include "store/store.h"

namespace gantry::store {
namespace {

constexpr const char* kSchema = R"sql(
-- Keyed by seq (the rowid): submissions append at the end of the b-tree, and there is no index
-- on the random job id to update at random places (jobs are looked up by id in memory only).
CREATE TABLE IF NOT EXISTS jobs (
  seq INTEGER PRIMARY KEY,
  id TEXT NOT NULL,
  endpoint_id TEXT NOT NULL,
  status TEXT NOT NULL,
  input TEXT NOT NULL,
  webhook TEXT NOT NULL DEFAULT '',
  s3_config TEXT NOT NULL DEFAULT '',
  execution_timeout_ms INTEGER NOT NULL,
  ttl_ms INTEGER NOT NULL,
  low_priority INTEGER NOT NULL,
  sync INTEGER NOT NULL,
  created_ms INTEGER NOT NULL,
  started_ms INTEGER NOT NULL,
  completed_ms INTEGER NOT NULL,
  worker_id TEXT NOT NULL,
  attempts INTEGER NOT NULL,
  output TEXT NOT NULL,
  error TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS logs (
  seq INTEGER PRIMARY KEY,
  at_ms INTEGER NOT NULL,
  endpoint_id TEXT NOT NULL,
  worker_id TEXT NOT NULL,
  stderr INTEGER NOT NULL,
  text TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS objects (
  kind TEXT NOT NULL,
  id TEXT NOT NULL,
  data TEXT NOT NULL,
  PRIMARY KEY (kind, id)
);
)sql";

constexpr const char* kPutJob =
    "INSERT OR REPLACE INTO jobs (id, endpoint_id, status, input, webhook, s3_config, "
    "execution_timeout_ms, ttl_ms, low_priority, sync, created_ms, started_ms, completed_ms, "
    "worker_id, attempts, output, error, seq) "
    "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18)";
constexpr const char* kUpdateJob =
    "UPDATE jobs SET endpoint_id=?2, status=?3, webhook=?5, s3_config=?6, "
    "execution_timeout_ms=?7, ttl_ms=?8, low_priority=?9, sync=?10, created_ms=?11, "
    "started_ms=?12, completed_ms=?13, worker_id=?14, attempts=?15, output=?16, error=?17, "
    "id=?1 WHERE seq=?18";
constexpr const char* kDeleteJob = "DELETE FROM jobs WHERE seq=?1";
constexpr const char* kPutObject =
    "INSERT OR REPLACE INTO objects (kind, id, data) VALUES (?1, ?2, ?3)";
constexpr const char* kAppendLog =
    "INSERT OR REPLACE INTO logs (seq, at_ms, endpoint_id, worker_id, stderr, text) "
    "VALUES (?1, ?2, ?3, ?4, ?5, ?6)";
constexpr const char* kTrimLogs = "DELETE FROM logs WHERE seq < ?1";
constexpr const char* kDeleteObject = "DELETE FROM objects WHERE kind=?1 AND id=?2";

// The busy handler of both connections: the writer and the checkpointer only wait for each
// other (a RESTART checkpoint holds off commits while it copies a few frames), so they retry
// every 50 us, where SQLite's busy_timeout sleeps 1, 2, 5, 10... ms and turns a short wait into
// several milliseconds. Gives up after 5 s, as busy_timeout=5000 did (counted from the first
// retry of a wait).
int BusyWait(void*, int count) {
  thread_local std::chrono::steady_clock::time_point first;
  const auto now = std::chrono::steady_clock::now();
  if (count == 0) first = now;
  if (now - first >= std::chrono::seconds(5)) return 0;
  usleep(50);
  return 1;
}

class SqliteStore final : public Store {
 public:
  SqliteStore(sqlite3* db, std::string path, SqliteOptions options, Executor executor)
      : db_(db), options_(options), executor_(std::move(executor)), path_(std::move(path)) {}
  ~SqliteStore() override {
    Stop();
    for (sqlite3_stmt* s : {put_job_, update_job_, delete_job_, put_object_, delete_object_,
                            append_log_, trim_logs_}) {
      sqlite3_finalize(s);
    }
    sqlite3_close(db_);
    if (ckpt_db_) sqlite3_close(ckpt_db_);
  }

  Status Init() {
    const char* pragmas = options_.sync_full
                              ? "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;"
                              : "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;";
    GANTRY_RETURN_IF_ERROR(Exec(pragmas));
    sqlite3_busy_handler(db_, BusyWait, nullptr);
    GANTRY_RETURN_IF_ERROR(Exec(kSchema));
    GANTRY_RETURN_IF_ERROR(Prepare(kPutJob, &put_job_));
    GANTRY_RETURN_IF_ERROR(Prepare(kUpdateJob, &update_job_));
    GANTRY_RETURN_IF_ERROR(Prepare(kDeleteJob, &delete_job_));
    GANTRY_RETURN_IF_ERROR(Prepare(kPutObject, &put_object_));
    GANTRY_RETURN_IF_ERROR(Prepare(kDeleteObject, &delete_object_));
    GANTRY_RETURN_IF_ERROR(Prepare(kAppendLog, &append_log_));
    GANTRY_RETURN_IF_ERROR(Prepare(kTrimLogs, &trim_logs_));
    // Checkpoints run on their own connection and thread, so that copying the WAL into the
    // database (and its fsyncs) never stalls a commit that requests are waiting on.
    GANTRY_RETURN_IF_ERROR(Exec("PRAGMA wal_autocheckpoint=0;"));
    // A WAL that a burst made large is cut back to this size when it starts over.
    GANTRY_RETURN_IF_ERROR(Exec("PRAGMA journal_size_limit=67108864;"));
    if (sqlite3_open_v2(path_.c_str(), &ckpt_db_, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX,
                        nullptr) != SQLITE_OK) {
      return Unavailable("cannot open a checkpoint connection to " + path_);
    }
    sqlite3_busy_handler(ckpt_db_, BusyWait, nullptr);
    // A connection only finds the WAL once it has read the database; until then a checkpoint
    // through it does nothing (and says so with -1 frames).
    if (sqlite3_exec(ckpt_db_, "SELECT count(*) FROM sqlite_master", nullptr, nullptr, nullptr) !=
        SQLITE_OK) {
      return Unavailable(std::string("cannot read through the checkpoint connection: ") +
                         sqlite3_errmsg(ckpt_db_));
    }
    writer_ = std::thread([this] { WriterLoop(); });
    checkpointer_ = std::thread([this] { CheckpointLoop(); });
    return Status::Ok();
  }

  Result<std::vector<JobRecord>> LoadJobs() override {
    std::lock_guard<std::mutex> db_lock(db_mu_);
    sqlite3_stmt* st = nullptr;
    GANTRY_RETURN_IF_ERROR(Prepare(
        "SELECT id, endpoint_id, status, input, webhook, s3_config, execution_timeout_ms, "
        "ttl_ms, low_priority, sync, created_ms, started_ms, completed_ms, worker_id, attempts, "
        "output, error, seq FROM jobs ORDER BY seq",
        &st));
    std::vector<JobRecord> out;
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
      JobRecord j;
      j.id = Text(st, 0);
      j.endpoint_id = Text(st, 1);
      j.status = Text(st, 2);
      j.input = Text(st, 3);
      j.webhook = Text(st, 4);
      j.s3_config = Text(st, 5);
      j.execution_timeout_ms = sqlite3_column_int64(st, 6);
      j.ttl_ms = sqlite3_column_int64(st, 7);
      j.low_priority = sqlite3_column_int(st, 8) != 0;
      j.sync = sqlite3_column_int(st, 9) != 0;
      j.created_ms = sqlite3_column_int64(st, 10);
      j.started_ms = sqlite3_column_int64(st, 11);
      j.completed_ms = sqlite3_column_int64(st, 12);
      j.worker_id = Text(st, 13);
      j.attempts = sqlite3_column_int(st, 14);
      j.output = Text(st, 15);
      j.error = Text(st, 16);
      j.seq = sqlite3_column_int64(st, 17);
      out.push_back(std::move(j));
    }
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE) return Internal(std::string("sqlite load jobs: ") + sqlite3_errmsg(db_));
    return out;
  }

  Result<std::vector<ObjectRecord>> LoadObjects(const std::string& kind) override {
    std::lock_guard<std::mutex> db_lock(db_mu_);
    sqlite3_stmt* st = nullptr;
    GANTRY_RETURN_IF_ERROR(Prepare("SELECT id, data FROM objects WHERE kind=?1 ORDER BY id", &st));
    sqlite3_bind_text(st, 1, kind.data(), static_cast<int>(kind.size()), SQLITE_TRANSIENT);
    std::vector<ObjectRecord> out;
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
      out.push_back(ObjectRecord{kind, Text(st, 0), Text(st, 1)});
    }
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE)
      return Internal(std::string("sqlite load objects: ") + sqlite3_errmsg(db_));
    return out;
  }

  Result<std::vector<LogRecord>> LoadLogs(size_t limit) override {
    std::lock_guard<std::mutex> db_lock(db_mu_);
    sqlite3_stmt* st = nullptr;
    GANTRY_RETURN_IF_ERROR(
        Prepare("SELECT seq, at_ms, endpoint_id, worker_id, stderr, text FROM logs "
                "WHERE seq > (SELECT IFNULL(MAX(seq), 0) FROM logs) - ?1 ORDER BY seq",
                &st));
    sqlite3_bind_int64(st, 1, static_cast<int64_t>(limit));
    std::vector<LogRecord> out;
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
      out.push_back(LogRecord{sqlite3_column_int64(st, 0), sqlite3_column_int64(st, 1), Text(st, 2),
                              Text(st, 3), sqlite3_column_int(st, 4) != 0, Text(st, 5)});
    }
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE) return Internal(std::string("sqlite load logs: ") + sqlite3_errmsg(db_));
    return out;
  }

  void Write(std::vector<Mutation> mutations, std::function<void(Status)> done) override {
    bool wake = false;
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (stopping_) {
        if (done) executor_([done] { done(Unavailable("store is stopped")); });
        return;
      }
      queue_.push_back(Pending{std::move(mutations), std::move(done)});
      // Wake the writer once per idle period, not once per write: a burst of writes that
      // arrives while it is waking (or committing) costs no futex call each.
      if (writer_idle_ && !wake_pending_) wake = wake_pending_ = true;
    }
    if (wake) cv_.notify_one();
  }

  void Stop() override {
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (stopping_) return;
      stopping_ = true;
      cv_.notify_one();
      cv_ckpt_.notify_one();
    }
    if (writer_.joinable()) writer_.join();
    if (checkpointer_.joinable()) checkpointer_.join();
    if (ckpt_db_)
      sqlite3_wal_checkpoint_v2(ckpt_db_, nullptr, SQLITE_CHECKPOINT_TRUNCATE, nullptr, nullptr);
  }

 private:
  struct Pending {
    std::vector<Mutation> mutations;
    std::function<void(Status)> done;
  };

  static std::string Text(sqlite3_stmt* st, int col) {
    const unsigned char* p = sqlite3_column_text(st, col);
    return p ? std::string(reinterpret_cast<const char*>(p),
                           static_cast<size_t>(sqlite3_column_bytes(st, col)))
             : std::string();
  }

  Status Exec(const char* sql) {
    char* err = nullptr;
    if (sqlite3_exec(db_, sql, nullptr, nullptr, &err) != SQLITE_OK) {
      std::string msg = err ? err : "unknown";
      sqlite3_free(err);
      return Internal("sqlite: " + msg);
    }
    return Status::Ok();
  }

  Status Prepare(const char* sql, sqlite3_stmt** st) {
    if (sqlite3_prepare_v2(db_, sql, -1, st, nullptr) != SQLITE_OK) {
      return Internal(std::string("sqlite prepare: ") + sqlite3_errmsg(db_));
    }
    return Status::Ok();
  }

  static void BindText(sqlite3_stmt* st, int i, const std::string& s) {
    sqlite3_bind_text(st, i, s.data(), static_cast<int>(s.size()), SQLITE_STATIC);
  }

  void BindJob(sqlite3_stmt* st, const JobRecord& j, bool with_input) {
    BindText(st, 1, j.id);
    BindText(st, 2, j.endpoint_id);
    BindText(st, 3, j.status);
    if (with_input) BindText(st, 4, j.input);
    BindText(st, 5, j.webhook);
    BindText(st, 6, j.s3_config);
    sqlite3_bind_int64(st, 7, j.execution_timeout_ms);
    sqlite3_bind_int64(st, 8, j.ttl_ms);
    sqlite3_bind_int(st, 9, j.low_priority);
    sqlite3_bind_int(st, 10, j.sync);
    sqlite3_bind_int64(st, 11, j.created_ms);
    sqlite3_bind_int64(st, 12, j.started_ms);
    sqlite3_bind_int64(st, 13, j.completed_ms);
    BindText(st, 14, j.worker_id);
    sqlite3_bind_int(st, 15, j.attempts);
    BindText(st, 16, j.output);
    BindText(st, 17, j.error);
    sqlite3_bind_int64(st, 18, j.seq);
  }

  Status Apply(const Mutation& m) {
    sqlite3_stmt* st = nullptr;
    switch (m.op) {
      case Mutation::Op::kPutJob:
        st = put_job_;
        BindJob(st, m.job, true);
        break;
      case Mutation::Op::kUpdateJob:
        st = update_job_;
        BindJob(st, m.job, false);
        break;
      case Mutation::Op::kDeleteJob:
        st = delete_job_;
        sqlite3_bind_int64(st, 1, m.job.seq);
        break;
      case Mutation::Op::kPutObject:
        st = put_object_;
        BindText(st, 1, m.object.kind);
        BindText(st, 2, m.object.id);
        BindText(st, 3, m.object.data);
        break;
      case Mutation::Op::kDeleteObject:
        st = delete_object_;
        BindText(st, 1, m.object.kind);
        BindText(st, 2, m.object.id);
        break;
      case Mutation::Op::kAppendLog:
        st = append_log_;
        sqlite3_bind_int64(st, 1, m.log.seq);
        sqlite3_bind_int64(st, 2, m.log.at_ms);
        BindText(st, 3, m.log.endpoint_id);
        BindText(st, 4, m.log.worker_id);
        sqlite3_bind_int(st, 5, m.log.stderr_stream);
        BindText(st, 6, m.log.text);
        break;
      case Mutation::Op::kTrimLogs:
        st = trim_logs_;
        sqlite3_bind_int64(st, 1, m.log.seq);
        break;
    }
    int rc = sqlite3_step(st);
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    if (rc != SQLITE_DONE) return Internal(std::string("sqlite write: ") + sqlite3_errmsg(db_));
    return Status::Ok();
  }

  // Every checkpoint_interval_ms, a passive checkpoint copies the WAL's frames into the
  // database without holding up the writer. Under sustained writes it never reaches the WAL's
  // end (the writer appends while it copies), and SQLite starts a WAL over from its beginning
  // only once every frame is copied; so once more than wal_restart_frames are in the WAL, a
  // RESTART checkpoint follows, which holds off the writer while it copies the few frames the
  // passive one left and makes the next commit start the WAL over. That bounds the WAL, and commits
  // then overwrite blocks the file already has, which is the cheaper fsync: appending also writes
  // the file's new size (measured in bench/RESULTS.md).
  void CheckpointLoop() {
    std::unique_lock<std::mutex> lock(mu_);
    while (!stopping_) {
      cv_ckpt_.wait_for(lock, std::chrono::milliseconds(options_.checkpoint_interval_ms));
      if (stopping_) break;
      lock.unlock();
      int log_frames = 0, done = 0;
      int rc = sqlite3_wal_checkpoint_v2(ckpt_db_, nullptr, SQLITE_CHECKPOINT_PASSIVE, &log_frames,
                                         &done);
      if (rc == SQLITE_OK && log_frames > options_.wal_restart_frames) {
        rc = sqlite3_wal_checkpoint_v2(ckpt_db_, nullptr, SQLITE_CHECKPOINT_RESTART, &log_frames,
                                       &done);
      }
      if (rc != SQLITE_OK && rc != SQLITE_BUSY) {
        GLOG_WARN("store: checkpoint failed: %s", sqlite3_errmsg(ckpt_db_));
      }
      lock.lock();
    }
  }

  void WriterLoop() {
    for (;;) {
      std::deque<Pending> batch;
      {
        std::unique_lock<std::mutex> lock(mu_);
        writer_idle_ = true;
        cv_.wait(lock, [&] { return stopping_ || !queue_.empty(); });
        writer_idle_ = false;
        wake_pending_ = false;
        if (queue_.empty()) return;  // stopping and drained
        size_t n = 0;
        while (!queue_.empty() && n < options_.max_batch) {
          n += queue_.front().mutations.size();
          batch.push_back(std::move(queue_.front()));
          queue_.pop_front();
        }
      }
      Status st = Commit(batch);
      if (!st.ok()) GLOG_ERROR("store: commit failed: %s", st.ToString().c_str());
      // One posted task completes the whole batch, in order.
      auto dones = std::make_shared<std::vector<std::function<void(Status)>>>();
      for (auto& p : batch) {
        if (p.done) dones->push_back(std::move(p.done));
      }
      if (!dones->empty()) {
        executor_([dones, st] {
          for (auto& d : *dones) d(st);
        });
      }
    }
  }

  Status Commit(std::deque<Pending>& batch) {
    std::lock_guard<std::mutex> db_lock(db_mu_);
    Status st = Exec("BEGIN IMMEDIATE");
    if (!st.ok()) return st;
    for (auto& p : batch) {
      for (auto& m : p.mutations) {
        st = Apply(m);
        if (!st.ok()) {
          Exec("ROLLBACK").ok();
          return st;
        }
      }
    }
    st = Exec("COMMIT");
    // A COMMIT that failed (a full disk) may leave the transaction open: nothing of the batch
    // may land later with another one.
    if (!st.ok()) Exec("ROLLBACK").ok();
    return st;
  }

  sqlite3* db_;
  SqliteOptions options_;
  Executor executor_;
  std::mutex db_mu_;  // guards db_ and the statements: the writer and loads
  sqlite3_stmt* put_job_ = nullptr;
  sqlite3_stmt* update_job_ = nullptr;
  sqlite3_stmt* delete_job_ = nullptr;
  sqlite3_stmt* put_object_ = nullptr;
  sqlite3_stmt* delete_object_ = nullptr;
  sqlite3_stmt* append_log_ = nullptr;
  sqlite3_stmt* trim_logs_ = nullptr;

  std::mutex mu_;  // guards queue_, stopping_
  std::condition_variable cv_;
  std::deque<Pending> queue_;
  bool stopping_ = false;
  bool writer_idle_ = false;   // the writer waits on cv_
  bool wake_pending_ = false;  // cv_ was notified since it started waiting
  std::thread writer_;
  std::thread checkpointer_;
  std::condition_variable cv_ckpt_;  // wakes the checkpointer at Stop()
  std::string path_;
  sqlite3* ckpt_db_ = nullptr;
};

}  // namespace

Result<std::unique_ptr<Store>> OpenSqliteStore(const std::string& path, SqliteOptions options,
                                               Executor executor) {
  // The database is its owner's alone from its first byte: made 0600 here (never through a
  // symlink) before SQLite opens it, which gives its journal and WAL files the same mode.
  if (path != ":memory:") {
    const int fd = open(path.c_str(), O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd < 0) return Unavailable("cannot open database " + path + ": " + strerror(errno));
    close(fd);
  }
  sqlite3* db = nullptr;
  int rc = sqlite3_open_v2(
      path.c_str(), &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, nullptr);
  if (rc != SQLITE_OK) {
    std::string msg = db ? sqlite3_errmsg(db) : "out of memory";
    sqlite3_close(db);
    return Unavailable("cannot open database " + path + ": " + msg);
  }
  auto store = std::make_unique<SqliteStore>(db, path, options, std::move(executor));
  GANTRY_RETURN_IF_ERROR(store->Init());
  return std::unique_ptr<Store>(std::move(store));
}

}  // namespace gantry::store
