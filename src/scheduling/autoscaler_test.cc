#include "scheduling/autoscaler.h"

#include <gtest/gtest.h>

#include "scheduling/placement.h"

namespace gantry::scheduling {
namespace {

constexpr int64_t kNow = 1'000'000;

EndpointSpec Spec(const std::string& scaler, int value, int min = 0, int max = 3) {
  EndpointSpec s;
  s.scaler_type = scaler;
  s.scaler_value = value;
  s.workers_min = min;
  s.workers_max = max;
  return s;
}

WorkerLoad Busy(const std::string& id, int jobs = 1) { return {id, true, jobs, 0}; }
WorkerLoad Idle(const std::string& id, int64_t since) { return {id, true, 0, since}; }

TEST(AutoscalerTest, QueueDelayStartsOneAtOnceFromZero) {
  auto d = DecideScale(Spec("QUEUE_DELAY", 4), {5, 0, 0, kNow}, {}, kNow);
  EXPECT_EQ(d.start, 1);
}

TEST(AutoscalerTest, QueueDelayWaitsForTheDelayBeforeAddingMore) {
  EndpointSpec s = Spec("QUEUE_DELAY", 4);
  EndpointLoad load{5, 0, 1, kNow - 3'999};
  EXPECT_EQ(DecideScale(s, load, {Busy("a")}, kNow).start, 0);
  load.oldest_queued_ms = kNow - 4'001;
  auto d = DecideScale(s, load, {Busy("a")}, kNow);
  EXPECT_EQ(d.target, 3);  // needs 6 slots; capped by workersMax
  EXPECT_EQ(d.start, 2);
}

TEST(AutoscalerTest, QueueDelayDoesNotAddWhileASlotIsFree) {
  EndpointSpec s = Spec("QUEUE_DELAY", 1);
  s.concurrency = 2;
  EndpointLoad load{1, 0, 1, kNow - 10'000};  // one free slot on the one worker
  EXPECT_EQ(DecideScale(s, load, {Busy("a")}, kNow).start, 0);
}

TEST(AutoscalerTest, RequestCountTargetsCeilOfJobsPerWorker) {
  EndpointSpec s = Spec("REQUEST_COUNT", 2, 0, 10);
  EXPECT_EQ(DecideScale(s, {5, 0, 0, kNow}, {}, kNow).start, 3);
  EXPECT_EQ(DecideScale(s, {3, 0, 2, kNow}, {Busy("a"), Busy("b")}, kNow).target, 3);
  EXPECT_EQ(DecideScale(s, {0, 0, 0, 0}, {}, kNow).start, 0);
}

TEST(AutoscalerTest, LowPriorityJobsNeverScaleUp) {
  auto d = DecideScale(Spec("REQUEST_COUNT", 1), {0, 50, 0, 0}, {}, kNow);
  EXPECT_EQ(d.start, 0);
  d = DecideScale(Spec("QUEUE_DELAY", 1), {0, 50, 0, 0}, {}, kNow);
  EXPECT_EQ(d.start, 0);
}

TEST(AutoscalerTest, WorkersMinAndMaxBound) {
  EXPECT_EQ(DecideScale(Spec("REQUEST_COUNT", 1, 2, 5), {0, 0, 0, 0}, {}, kNow).start, 2);
  EXPECT_EQ(DecideScale(Spec("REQUEST_COUNT", 1, 0, 5), {100, 0, 0, kNow}, {}, kNow).start, 5);
}

TEST(AutoscalerTest, BufferWorkersWhileBusy) {
  EndpointSpec s = Spec("REQUEST_COUNT", 1, 0, 10);
  s.buffer_workers = 2;
  EXPECT_EQ(DecideScale(s, {1, 0, 0, kNow}, {}, kNow).target, 3);
  EXPECT_EQ(DecideScale(s, {0, 0, 0, 0}, {}, kNow).target, 0);
}

TEST(AutoscalerTest, IdleWorkersStopOnlyAfterIdleTimeoutOldestFirst) {
  EndpointSpec s = Spec("QUEUE_DELAY", 4);
  s.idle_timeout_s = 5;
  std::vector<WorkerLoad> ws = {Idle("new", kNow - 4'999), Idle("old", kNow - 9'000), Busy("busy")};
  auto d = DecideScale(s, {0, 0, 1, 0}, ws, kNow);
  EXPECT_EQ(d.target, 1);
  EXPECT_EQ(d.stop, std::vector<std::string>{"old"});
  d = DecideScale(s, {0, 0, 1, 0}, ws, kNow + 1);
  EXPECT_EQ(d.stop, (std::vector<std::string>{"old", "new"}));
}

TEST(AutoscalerTest, WorkersMinKeepsIdleWorkers) {
  EndpointSpec s = Spec("QUEUE_DELAY", 4, 1, 3);
  s.idle_timeout_s = 1;
  auto d = DecideScale(s, {0, 0, 0, 0}, {Idle("a", 0), Idle("b", 0)}, kNow);
  EXPECT_EQ(d.stop.size(), 1u);
}

TEST(AutoscalerTest, StartingWorkersAreNeverStopped) {
  EndpointSpec s = Spec("QUEUE_DELAY", 4);
  s.idle_timeout_s = 0;
  auto d = DecideScale(s, {0, 0, 0, 0}, {WorkerLoad{"s", false, 0, 0}}, kNow);
  EXPECT_TRUE(d.stop.empty());
}

// ---- placement ----

NodeView Node(const std::string& id, std::vector<std::string> gpus, int64_t mem = 65536) {
  NodeView n;
  n.id = id;
  n.memory_mb = mem;
  for (size_t i = 0; i < gpus.size(); ++i) n.gpus.push_back({static_cast<int>(i), gpus[i]});
  return n;
}

EndpointSpec GpuSpec(std::vector<std::string> types, int count = 1) {
  EndpointSpec s;
  s.gpu_type_ids = std::move(types);
  s.gpu_count = count;
  return s;
}

TEST(PlacementTest, FollowsPreferenceOrder) {
  auto p = Place(GpuSpec({"H100", "A100-80GB"}),
                 {Node("a", {"A100-80GB"}), Node("h", {"H100", "H100"})}, "");
  ASSERT_TRUE(p.ok());
  EXPECT_EQ(p->node_id, "h");
  EXPECT_EQ(p->gpu_type, "H100");
}

TEST(PlacementTest, FallsBackToTheNextType) {
  std::vector<NodeView> nodes = {Node("a", {"A100-80GB"}), Node("h", {"H100"})};
  nodes[1].gpus[0].used = true;
  auto p = Place(GpuSpec({"H100", "A100-80GB"}), nodes, "");
  ASSERT_TRUE(p.ok());
  EXPECT_EQ(p->node_id, "a");
  EXPECT_EQ(p->gpu_type, "A100-80GB");
}

TEST(PlacementTest, GpuCountTwoNeedsTwoFreeOnOneNode) {
  std::vector<NodeView> nodes = {Node("a", {"H100"}), Node("b", {"H100", "H100", "H100"})};
  nodes[1].gpus[0].used = true;
  auto p = Place(GpuSpec({"H100"}, 2), nodes, "");
  ASSERT_TRUE(p.ok());
  EXPECT_EQ(p->node_id, "b");
  EXPECT_EQ(p->gpu_indexes, (std::vector<int>{1, 2}));
  nodes[1].gpus[1].used = true;
  EXPECT_EQ(Place(GpuSpec({"H100"}, 2), nodes, "").status().code(), Code::kResourceExhausted);
}

TEST(PlacementTest, CpuWorkersCountMemoryOnly) {
  EndpointSpec s;  // gpuTypeIds ["cpu"], 1024 MB
  std::vector<NodeView> nodes = {Node("n", {}, 2048)};
  ASSERT_TRUE(Place(s, nodes, "").ok());
  nodes[0].memory_used_mb = 1500;
  EXPECT_EQ(Place(s, nodes, "").status().code(), Code::kResourceExhausted);
}

// What `gantry deploy`, /health and /runsync say when no node could ever run an endpoint.
TEST(PlacementTest, WhyUnplaceableNamesWhatIsMissing) {
  std::vector<NodeView> nodes = {Node("n1", {}, 8192), Node("n2", {"NVIDIA A100-SXM4-80GB"}, 4096)};
  EXPECT_EQ(WhyUnplaceable(GpuSpec({"H100", "L40S"}), nodes),
            "no live node has a GPU of type H100 or L40S (n1: no GPUs; n2: 1 x "
            "NVIDIA A100-SXM4-80GB)");
  EXPECT_EQ(WhyUnplaceable(GpuSpec({"A100"}, 2), nodes),
            "no live node has 2 GPUs of type A100 (n1: no GPUs; n2: 1 x NVIDIA A100-SXM4-80GB)");
  EXPECT_EQ(WhyUnplaceable(GpuSpec({"A100"}), nodes), "");  // busy or not: it could
  EndpointSpec big = GpuSpec({"A100", "cpu"});
  big.memory_mb = 16384;
  EXPECT_EQ(WhyUnplaceable(big, nodes),
            "workers need 16384 MB of memory (memoryMb); the largest live node that has their "
            "GPUs has 8192 MB");
  nodes[0].alive = false;
  nodes[1].alive = false;
  EXPECT_NE(WhyUnplaceable(EndpointSpec{}, nodes).find("no live node is registered"),
            std::string::npos);
  EXPECT_NE(WhyUnplaceable(EndpointSpec{}, {}).find("no live node is registered"),
            std::string::npos);
}

TEST(PlacementTest, PrefersNodeHoldingTheBundleAndSkipsDeadNodes) {
  std::vector<NodeView> nodes = {Node("big", {}, 100000), Node("warm", {}, 4096),
                                 Node("dead", {}, 900000)};
  nodes[1].cached.insert("ep@3");
  nodes[2].alive = false;
  EXPECT_EQ(Place(EndpointSpec{}, nodes, "ep@3")->node_id, "warm");
  EXPECT_EQ(Place(EndpointSpec{}, nodes, "other")->node_id, "big");
}

TEST(PlacementTest, PrefersTemplateThenSnapshotThenBundle) {
  EndpointSpec spec;
  spec.id = "ep";
  spec.version = 4;
  std::vector<NodeView> nodes = {Node("bundle", {}, 900000), Node("snap", {}, 4096),
                                 Node("tpl", {}, 2048), Node("cold", {}, 990000)};
  nodes[0].cached.insert("digest");
  nodes[1].cached.insert(SnapshotCacheKey("ep", 4));
  nodes[2].cached.insert(TemplateCacheKey("ep", 4));
  nodes[3].cached.insert(TemplateCacheKey("ep", 3));  // an old version counts for nothing
  EXPECT_EQ(Place(spec, nodes, "digest")->node_id, "tpl");
  nodes[2].cached.clear();
  EXPECT_EQ(Place(spec, nodes, "digest")->node_id, "snap");
  nodes[1].cached.clear();
  EXPECT_EQ(Place(spec, nodes, "digest")->node_id, "bundle");
  EXPECT_EQ(Place(spec, nodes, "")->node_id, "cold");
}

TEST(PlacementTest, NvmlModelNamesMatchShortTypes) {
  EXPECT_TRUE(GpuTypeMatches("H100", "NVIDIA H100 80GB HBM3"));
  EXPECT_TRUE(GpuTypeMatches("h200", "NVIDIA H200"));
  EXPECT_FALSE(GpuTypeMatches("A100", "NVIDIA H100"));
}

}  // namespace
}  // namespace gantry::scheduling
