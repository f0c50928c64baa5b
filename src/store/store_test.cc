#include "store/store.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <future>
#include <mutex>
#include <thread>

#include "common/env.h"

namespace gantry::store {

namespace fs = std::filesystem;

class SqliteStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("gantry_store_test_" + NewId("", 8));
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::unique_ptr<Store> Open() {
    auto s =
        OpenSqliteStore((dir_ / "db.sqlite").string(), {}, [](std::function<void()> fn) { fn(); });
    EXPECT_TRUE(s.ok()) << s.status().ToString();
    return std::move(*s);
  }
  static JobRecord MakeJob(const std::string& id, int64_t seq) {
    JobRecord j;
    j.id = id;
    j.endpoint_id = "ep";
    j.status = "IN_QUEUE";
    j.input = R"({"x":1})";
    j.execution_timeout_ms = 600000;
    j.ttl_ms = 86400000;
    j.created_ms = 1000 + seq;
    j.seq = seq;
    return j;
  }
  static Status WriteSync(Store* s, std::vector<Mutation> m) {
    std::promise<Status> p;
    s->Write(std::move(m), [&](Status st) { p.set_value(st); });
    return p.get_future().get();
  }
  fs::path dir_;
};

TEST_F(SqliteStoreTest, JobsSurviveReopenInOrder) {
  {
    auto s = Open();
    ASSERT_TRUE(
        WriteSync(s.get(), {Mutation::PutJob(MakeJob("b", 2)), Mutation::PutJob(MakeJob("a", 1))})
            .ok());
    JobRecord upd = MakeJob("a", 1);
    upd.input = "";  // UpdateJob never touches the input
    upd.status = "COMPLETED";
    upd.output = R"({"y":2})";
    upd.attempts = 1;
    ASSERT_TRUE(WriteSync(s.get(), {Mutation::UpdateJob(upd)}).ok());
  }
  auto s = Open();
  auto jobs = s->LoadJobs();
  ASSERT_TRUE(jobs.ok());
  ASSERT_EQ(jobs->size(), 2u);
  EXPECT_EQ((*jobs)[0].id, "a");
  EXPECT_EQ((*jobs)[0].status, "COMPLETED");
  EXPECT_EQ((*jobs)[0].input, R"({"x":1})");
  EXPECT_EQ((*jobs)[0].output, R"({"y":2})");
  EXPECT_EQ((*jobs)[0].attempts, 1);
  EXPECT_EQ((*jobs)[1].id, "b");
  ASSERT_TRUE(WriteSync(s.get(), {Mutation::DeleteJob("a", 1)}).ok());
  EXPECT_EQ(s->LoadJobs()->size(), 1u);
}

TEST_F(SqliteStoreTest, ObjectsByKind) {
  auto s = Open();
  ASSERT_TRUE(WriteSync(s.get(), {Mutation::PutObject({"endpoint", "e1", "{}"}),
                                  Mutation::PutObject({"key", "k1", "{\"a\":1}"}),
                                  Mutation::PutObject({"endpoint", "e1", "{\"v\":2}"})})
                  .ok());
  auto eps = s->LoadObjects("endpoint");
  ASSERT_EQ(eps->size(), 1u);
  EXPECT_EQ((*eps)[0].data, "{\"v\":2}");
  ASSERT_TRUE(WriteSync(s.get(), {Mutation::DeleteObject("endpoint", "e1")}).ok());
  EXPECT_TRUE(s->LoadObjects("endpoint")->empty());
  EXPECT_EQ(s->LoadObjects("key")->size(), 1u);
}

TEST_F(SqliteStoreTest, ConcurrentWritersAreGroupCommittedAndAllDurable) {
  auto s = Open();
  constexpr int kThreads = 4, kPer = 250;
  std::atomic<int> done{0};
  std::vector<std::thread> ts;
  for (int t = 0; t < kThreads; ++t) {
    ts.emplace_back([&, t] {
      for (int i = 0; i < kPer; ++i) {
        s->Write({Mutation::PutJob(MakeJob("j" + std::to_string(t * kPer + i), t * kPer + i))},
                 [&](Status st) {
                   EXPECT_TRUE(st.ok());
                   ++done;
                 });
      }
    });
  }
  for (auto& t : ts) t.join();
  s->Stop();  // drains the queue
  EXPECT_EQ(done.load(), kThreads * kPer);
  s.reset();
  EXPECT_EQ(Open()->LoadJobs()->size(), static_cast<size_t>(kThreads * kPer));
}

// Sustained writes, never a pause for a checkpoint to catch up: the WAL still starts over, so it
// stays bounded, and every job is in the database afterwards. (A checkpoint connection that had
// never read the database did nothing at all: the WAL grew with every commit until a restart.)
TEST_F(SqliteStoreTest, WalStaysBoundedUnderSustainedWrites) {
  SqliteOptions options;
  options.checkpoint_interval_ms = 10;
  options.wal_restart_frames = 64;
  const std::string path = (dir_ / "db.sqlite").string();
  auto opened = OpenSqliteStore(path, options, [](std::function<void()> fn) { fn(); });
  ASSERT_TRUE(opened.ok()) << opened.status().ToString();
  std::unique_ptr<Store> s = std::move(*opened);
  constexpr int kCommits = 600, kPerCommit = 4;
  const std::string input(4000, 'x');  // a page per job: ~10 MiB of WAL frames in all
  uintmax_t max_wal = 0;
  for (int c = 0; c < kCommits; ++c) {
    std::vector<Mutation> m;
    for (int i = 0; i < kPerCommit; ++i) {
      const int seq = c * kPerCommit + i + 1;
      JobRecord j = MakeJob("j" + std::to_string(seq), seq);
      j.input = input;
      m.push_back(Mutation::PutJob(j));
    }
    ASSERT_TRUE(WriteSync(s.get(), std::move(m)).ok());
    std::error_code ec;
    max_wal = std::max(max_wal, fs::file_size(path + "-wal", ec));
  }
  EXPECT_GT(fs::file_size(path), 1u << 20) << "nothing was checkpointed into the database";
  EXPECT_LT(max_wal, 4u << 20) << "the WAL never started over";
  s.reset();
  EXPECT_EQ(Open()->LoadJobs()->size(), static_cast<size_t>(kCommits * kPerCommit));
}

TEST_F(SqliteStoreTest, WriteAfterStopFails) {
  auto s = Open();
  s->Stop();
  EXPECT_EQ(WriteSync(s.get(), {Mutation::PutJob(MakeJob("x", 1))}).code(), Code::kUnavailable);
}

TEST(MemoryStoreTest, DeferredWritesWaitForFlush) {
  MemoryStore m;
  m.set_deferred(true);
  bool done = false;
  JobRecord j;
  j.id = "a";
  m.Write({Mutation::PutJob(j)}, [&](Status) { done = true; });
  EXPECT_FALSE(done);
  EXPECT_EQ(m.job_count(), 0u);
  m.FlushDeferred();
  EXPECT_TRUE(done);
  EXPECT_EQ(m.job_count(), 1u);
}

TEST_F(SqliteStoreTest, LogsAppendTrimAndLoadNewestFirstInOrder) {
  {
    auto s = Open();
    std::vector<Mutation> m;
    for (int i = 1; i <= 10; ++i) {
      m.push_back(
          Mutation::AppendLog({i, 100 + i, "ep", "w", i % 2 == 0, "l" + std::to_string(i)}));
    }
    m.push_back(Mutation::TrimLogs(3));  // drops 1 and 2
    ASSERT_TRUE(WriteSync(s.get(), std::move(m)).ok());
  }
  auto s = Open();
  auto all = s->LoadLogs(100);
  ASSERT_TRUE(all.ok());
  ASSERT_EQ(all->size(), 8u);
  EXPECT_EQ(all->front().text, "l3");
  auto newest = s->LoadLogs(3);
  ASSERT_EQ(newest->size(), 3u);
  EXPECT_EQ((*newest)[0].text, "l8");
  EXPECT_EQ((*newest)[2].text, "l10");
  EXPECT_TRUE((*newest)[2].stderr_stream);
  EXPECT_EQ((*newest)[2].at_ms, 110);
}

}  // namespace gantry::store
