#include "scheduling/metering.h"

#include <gtest/gtest.h>

#include "scheduling/log_store.h"

namespace gantry::scheduling {
namespace {

TEST(MeteringTest, BillsEachWorkerRoundedUpToTheSecond) {
  EXPECT_EQ(Metering::BilledSeconds(0, 0), 0);
  EXPECT_EQ(Metering::BilledSeconds(0, 1), 1);
  EXPECT_EQ(Metering::BilledSeconds(0, 1000), 1);
  EXPECT_EQ(Metering::BilledSeconds(0, 1001), 2);
  EXPECT_EQ(Metering::BilledSeconds(5000, 4000), 0);
}

TEST(MeteringTest, ReportsByEndpointAndGpuTypeWithPricesAndSurvivesReload) {
  FakeClock clock(1'000'000);
  store::MemoryStore store;
  Metering m(&clock, &store, {{"H100", 0.001}, {"cpu", 0.0001}});
  m.WorkerStarted({"w1", "ep", "H100", 2, clock.NowMs(), 0});
  m.WorkerStarted({"w2", "ep", "cpu", 0, clock.NowMs(), 0});
  clock.Advance(2'500);
  m.WorkerStopped("w1");
  m.JobFinished("ep", 1200);
  m.JobFinished("ep", 300);
  clock.Advance(500);  // w2 still runs: billed up to now
  json::object r = m.Report(0, "");
  EXPECT_EQ(r.at("totalBilledSeconds").as_int64(), 3 + 3);
  // 3 s x 2 GPUs x 0.001 + 3 s x 0.0001
  EXPECT_NEAR(r.at("totalCost").to_number<double>(), 0.006 + 0.0003, 1e-9);
  const auto& jobs = r.at("jobs").as_array();
  ASSERT_EQ(jobs.size(), 1u);
  EXPECT_EQ(jobs[0].as_object().at("jobs").as_int64(), 2);
  EXPECT_EQ(jobs[0].as_object().at("executionMs").as_int64(), 1500);
  // Since 100 ms ago: w1 (stopped 500 ms ago) is left out; w2 (running) is in.
  EXPECT_EQ(m.Report(clock.NowMs() - 100, "").at("byEndpoint").as_array().size(), 1u);
  EXPECT_TRUE(m.Report(0, "other").at("byEndpoint").as_array().empty());

  m.Flush();
  Metering again(&clock, &store, {{"H100", 0.001}, {"cpu", 0.0001}});
  ASSERT_TRUE(again.Load().ok());
  json::object r2 = again.Report(0, "ep");
  EXPECT_EQ(r2.at("workers").as_array().size(), 2u);
  EXPECT_EQ(r2.at("jobs").as_array()[0].as_object().at("jobs").as_int64(), 2);
}

// Metering hears of finished jobs and stopped workers from the modules it observes.
TEST(MeteringTest, ObservesFinishedJobsAndStoppedWorkers) {
  FakeClock clock(1'000'000);
  store::MemoryStore store;
  jobs::JobManager jobs(&clock, &store, {}, [](auto&&...) {});
  EndpointRegistry endpoints(&clock, &store, &jobs);
  WorkerRegistry workers(&clock, &store, &jobs, WorkerOptions{});
  Metering m(&clock, &store, {{"cpu", 0.0001}}, &jobs, &workers);
  ASSERT_TRUE(endpoints.Create(*ParseJson(R"({"id":"ep"})"), {}).ok());
  auto reg = workers.Register("ep", {});
  ASSERT_TRUE(reg.ok());
  const std::string wid = reg->first.id;
  m.WorkerStarted({wid, "ep", "cpu", 0, clock.NowMs(), 0});
  jobs::SubmitRequest sr;
  sr.endpoint_id = "ep";
  sr.input = "{}";
  std::string job = (*jobs.Submit(sr, {}))->rec.id;
  jobs.Take("ep", wid, 1, 0, [](auto) {});
  clock.Advance(700);
  ASSERT_TRUE(jobs.Finish(wid, job, *ParseJson(R"({"output":1})"), false, {}).ok());
  workers.Stop(wid, "done");
  json::object r = m.Report(0, "ep");
  EXPECT_EQ(r.at("jobs").as_array()[0].as_object().at("executionMs").as_int64(), 700);
  EXPECT_NE(r.at("workers").as_array()[0].as_object().at("endMs").as_int64(), 0);
}

TEST(MeteringTest, NvmlModelNamesFindTheirPrice) {
  FakeClock clock;
  store::MemoryStore store;
  Metering m(&clock, &store, DefaultPrices());
  EXPECT_DOUBLE_EQ(m.PricePerSecond("NVIDIA H100 80GB HBM3"), DefaultPrices().at("H100"));
  EXPECT_DOUBLE_EQ(m.PricePerSecond("NVIDIA L40S"), DefaultPrices().at("L40S"));
  EXPECT_DOUBLE_EQ(m.PricePerSecond("unknown"), 0);
}

TEST(LogStoreTest, ANoisyEndpointDropsItsOwnLinesNotAnothers) {
  LogStore logs(nullptr, /*capacity=*/100, /*per_endpoint=*/30);
  auto line = [](const std::string& ep, int i) {
    LogEntry e;
    e.endpoint_id = ep;
    e.worker_id = ep + "-w";
    e.text = ep + " " + std::to_string(i);
    e.at_ms = i;
    return e;
  };
  for (int i = 0; i < 10; ++i) logs.Append(line("quiet", i));
  for (int i = 0; i < 1000; ++i) logs.Append(line("noisy", i));
  LogQuery quiet;
  quiet.endpoint_id = "quiet";
  EXPECT_EQ(logs.Query(quiet).size(), 10u);  // every quiet line is still there
  LogQuery noisy;
  noisy.endpoint_id = "noisy";
  auto kept = logs.Query(noisy);
  ASSERT_EQ(kept.size(), 30u);  // its own newest
  EXPECT_EQ(kept.front().text, "noisy 970");
  // All endpoints together, in order, and the capacity over all of them.
  LogQuery all;
  all.limit = 1000;
  auto both = logs.Query(all);
  ASSERT_EQ(both.size(), 40u);
  EXPECT_EQ(both.front().text, "quiet 0");
  EXPECT_EQ(both.back().text, "noisy 999");
  EXPECT_EQ(logs.Tail("quiet-w", 2), (std::vector<std::string>{"quiet 8", "quiet 9"}));
  for (int e = 0; e < 5; ++e) {
    for (int i = 0; i < 30; ++i) logs.Append(line("ep" + std::to_string(e), i));
  }
  EXPECT_EQ(logs.Query(all).size(), 100u);  // past the capacity, the oldest lines of all go
  EXPECT_TRUE(logs.Query(quiet).empty());
}

TEST(LogStoreTest, KeepsTheNewestLinesAcrossARestart) {
  store::MemoryStore store;
  {
    LogStore logs(&store, /*capacity=*/1500);
    for (int i = 1; i <= 3000; ++i) {
      LogEntry e;
      e.endpoint_id = "ep";
      e.worker_id = i % 2 ? "w1" : "w2";
      e.text = "line " + std::to_string(i);
      e.at_ms = i;
      logs.Append(std::move(e));
    }
    EXPECT_EQ(logs.Tail("w2", 2), (std::vector<std::string>{"line 2998", "line 3000"}));
  }
  EXPECT_EQ(store.LoadLogs(1u << 20)->size(), 1501u);  // trimmed to the limit (every 1000)
  LogStore again(&store, 1500);
  ASSERT_TRUE(again.Load().ok());
  LogQuery q;
  q.worker_id = "w1";
  q.from_ms = 2990;
  q.limit = 100;
  auto lines = again.Query(q);
  ASSERT_EQ(lines.size(), 5u);
  EXPECT_EQ(lines.back().text, "line 2999");
  LogEntry next;
  next.worker_id = "w1";
  next.text = "after restart";
  again.Append(next);
  EXPECT_EQ(again.Query(LogQuery{"", "w1", 2999, 0, 0, 10}).back().seq, 3001);
}

}  // namespace
}  // namespace gantry::scheduling
