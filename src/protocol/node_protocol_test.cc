#include "protocol/node_protocol.h"

#include <gtest/gtest.h>

namespace gantry::protocol {
namespace {

// Encode, then decode through the text on the wire.
template <typename T, typename Decode>
T RoundTrip(const T& in, Decode decode) {
  auto out = DecodeText(ToJson(Encode(in)), decode);
  EXPECT_TRUE(out.ok()) << out.status().ToString();
  return out.ok() ? *out : T{};
}

WorkerAssignment FullWorker() {
  WorkerAssignment w;
  w.image = "127.0.0.1:5000/w:1";
  w.registry_username = "u";
  w.registry_password = "p";
  w.insecure_registry = true;
  w.worker_id = "w-1";
  w.endpoint_id = "ep";
  w.endpoint_version = 7;
  w.command = {"/usr/bin/python3", "handler.py"};
  w.workdir = "src";
  w.bundle = std::string(64, 'a');
  w.env = {{"A", "1"}, {"RUNPOD_POD_ID", "w-1"}};
  w.gpu_type = "H100";
  w.gpus = {0, 3};
  w.cpu = 1.5;
  w.memory_mb = 2048;
  w.use_template = false;
  w.volume = "weights";
  w.volume_mount_path = "/data";
  w.read_only_rootfs = true;
  w.host_network = true;
  return w;
}

TEST(NodeProtocolTest, InventoryRoundTrips) {
  NodeInventory inv{"n1", 16, 65536, {{0, "H100", "GPU-a"}, {1, "H100", "GPU-b"}}, {}};
  inv.runtime = {"runc",
                 {"crun cannot run a container here (x)"},
                 "cgroup v1 (memory)",
                 "uid per endpoint (200000-299999)",
                 "own network namespace (10.213.0.0/22)"};
  EXPECT_EQ(RoundTrip(inv, DecodeInventory), inv);
}

TEST(NodeProtocolTest, AssignmentRoundTrips) {
  Assignment a;
  a.version = 42;
  a.workers = {FullWorker(), WorkerAssignment{}};
  a.workers[1].worker_id = "w-2";
  a.images = {ImagePrefetch{{"r/i:1", "u", "p", true}, "ep:1,ep2:3"}};
  a.has_images = true;
  a.template_versions = {{"ep", 7}, {"other", 1}};
  a.has_template_versions = true;
  EXPECT_EQ(RoundTrip(a, DecodeAssignment), a);
}

TEST(NodeProtocolTest, StatusRoundTrips) {
  NodeStatus s;
  s.workers = {
      {"w-1", WorkerRunState::kRunning, 10, 20, 0, "", StartPath::kFork, ""},
      {"w-2", WorkerRunState::kExited, 11, 0, -1, "no such file", StartPath::kFull, "no template"},
      {"w-3", WorkerRunState::kStarting, 12, 0, 0, "", StartPath::kNone, ""},
      {"w-4", WorkerRunState::kRunning, 13, 14, 0, "", StartPath::kRestore, ""}};
  s.bundles = {"d1", "d2"};
  s.templates =
      std::vector<TemplateReport>{{"ep", 7, TemplateState::kReady, 123, 40, 3, true, 12, true},
                                  {"ep2", 1, TemplateState::kNone, 0, 0, 0, true, 5, false}};
  s.start_counters = StartCounters{1, 2, 3, 4, 5, 6, 7, 8};
  s.images = std::vector<ImagePullReport>{{"r/i:1", "ep:1", PullState::kFailed, "nope", 99, 2}};
  EXPECT_EQ(RoundTrip(s, DecodeStatus), s);
}

TEST(NodeProtocolTest, StatusWithoutTemplatesOrImagesKeepsThemAbsent) {
  NodeStatus s;
  s.workers = {{"w-1", WorkerRunState::kExited, 1, 2, 3, "e", StartPath::kFull, ""}};
  NodeStatus back = RoundTrip(s, DecodeStatus);
  EXPECT_EQ(back, s);
  EXPECT_FALSE(back.templates.has_value());
  EXPECT_FALSE(back.images.has_value());
  json::object shown;
  AddAgentParts(back, &shown);
  EXPECT_TRUE(shown.empty());
}

TEST(NodeProtocolTest, LogsRoundTrip) {
  std::vector<LogLine> lines = {{"w-1", false, "hello", 5}, {"w-2", true, "oops \"x\"\n", 6}};
  EXPECT_EQ(RoundTrip(lines, DecodeLogs), lines);
}

// The field names on the wire: an agent and a server of different builds must agree on them.
TEST(NodeProtocolTest, AssignmentWireFormatIsStable) {
  Assignment a;
  a.version = 3;
  a.workers = {FullWorker()};
  a.template_versions = {{"ep", 7}};
  a.images = {ImagePrefetch{{"r/i:1", "", "", false}, "ep:7"}};
  EXPECT_EQ(ToJson(Encode(a)),
            R"({"version":3,"workers":[{"workerId":"w-1","endpointId":"ep","endpointVersion":7,)"
            R"("command":["/usr/bin/python3","handler.py"],"workdir":"src","bundle":")" +
                std::string(64, 'a') +
                R"(","env":{"A":"1","RUNPOD_POD_ID":"w-1"},"gpuType":"H100","gpus":[0,3],)"
                R"("cpu":1.5,"memoryMb":2048,"flashboot":false,"volume":"weights",)"
                R"("volumeMountPath":"/data","readOnlyRootfs":true,"hostNetwork":true,)"
                R"("image":"127.0.0.1:5000/w:1",)"
                R"("registryAuth":{"username":"u","password":"p"},"insecureRegistry":true}],)"
                R"("templateVersions":{"ep":7},"images":[{"generation":"ep:7","image":"r/i:1",)"
                R"("registryAuth":{"username":"","password":""},"insecureRegistry":false}]})");
}

TEST(NodeProtocolTest, StatusWireFormatIsStable) {
  NodeStatus s;
  s.workers = {{"w-1", WorkerRunState::kExited, 1, 2, 3, "e", StartPath::kFull, "n"}};
  s.bundles = {"d"};
  s.templates =
      std::vector<TemplateReport>{{"ep", 7, TemplateState::kBusy, 9, 1, 2, true, 3, false}};
  s.start_counters = StartCounters{1, 2, 3, 4, 5, 6, 7, 8};
  s.images = std::vector<ImagePullReport>{{"r/i:1", "g", PullState::kPulling, "d", 4, 1}};
  EXPECT_EQ(ToJson(Encode(s)),
            R"({"workers":[{"workerId":"w-1","state":"exited","receivedAt":1,"spawnedAt":2,)"
            R"("exitCode":3,"error":"e","startPath":"full","startNote":"n"}],"bundles":["d"],)"
            R"("templates":[{"endpointId":"ep","version":7,"state":"busy","pid":9,"memoryMb":1,)"
            R"("forks":2,"snapshot":true,"snapshotMb":3,"container":false}],"startCounters":)"
            R"({"forks":1,"restores":2,"forkFailures":3,"restoreFailures":4,"templateFailures":5,)"
            R"("snapshotFailures":6,"evictions":7,"retirements":8},"images":[{"image":"r/i:1",)"
            R"("generation":"g","state":"pulling","detail":"d","updatedAt":4,"fetches":1}]})");
}

TEST(NodeProtocolTest, DecodersAreLenientAboutFieldsAndStrictAboutTheBody) {
  EXPECT_EQ(DecodeText("[1]", DecodeAssignment).status().code(), Code::kInvalidArgument);
  EXPECT_EQ(DecodeText("{", DecodeStatus).status().code(), Code::kInvalidArgument);
  EXPECT_EQ(DecodeText("\"x\"", DecodeInventory).status().code(), Code::kInvalidArgument);
  EXPECT_EQ(DecodeText("7", DecodeLogs).status().code(), Code::kInvalidArgument);

  // Missing fields take their defaults; entries of the wrong shape are skipped.
  auto a = DecodeText(R"({"version":2,"workers":[1,{"workerId":"w","gpus":[1,"x"]}]})",
                      DecodeAssignment);
  ASSERT_TRUE(a.ok());
  EXPECT_EQ(a->version, 2);
  ASSERT_EQ(a->workers.size(), 1u);
  EXPECT_EQ(a->workers[0].worker_id, "w");
  EXPECT_EQ(a->workers[0].gpus, (std::vector<int>{1, 0}));
  EXPECT_TRUE(a->workers[0].use_template);
  EXPECT_FALSE(a->has_images);
  EXPECT_FALSE(a->has_template_versions);

  // A worker report with an unknown state or no id, and a template of no endpoint, are dropped.
  auto s = DecodeText(
      R"({"workers":[{"workerId":"a","state":"zombie"},{"state":"running"},)"
      R"({"workerId":"b","state":"exited","exitCode":"x"}],)"
      R"("templates":[{"version":1,"state":"ready"},{"endpointId":"e","state":"ready"}]})",
      DecodeStatus);
  ASSERT_TRUE(s.ok());
  ASSERT_EQ(s->workers.size(), 1u);
  EXPECT_EQ(s->workers[0].worker_id, "b");
  EXPECT_EQ(s->workers[0].exit_code, 0);
  ASSERT_TRUE(s->templates.has_value());
  ASSERT_EQ(s->templates->size(), 1u);
  EXPECT_EQ((*s->templates)[0].state, TemplateState::kReady);
  EXPECT_FALSE(s->images.has_value());
}

TEST(NodeProtocolTest, DecodesAnAssignmentAsAnOlderServerSentIt) {
  auto a = DecodeText(R"({"version":4,"workers":[{"workerId":"w","endpointId":"e",
      "command":["a","b"],"env":{"K":"V"},"gpus":[1],"cpu":0.5,"memoryMb":256,"gpuType":"H100"}]})",
                      DecodeAssignment);
  ASSERT_TRUE(a.ok());
  EXPECT_EQ(a->version, 4);
  ASSERT_EQ(a->workers.size(), 1u);
  EXPECT_EQ(a->workers[0].command, (std::vector<std::string>{"a", "b"}));
  EXPECT_EQ(a->workers[0].env.at("K"), "V");
  EXPECT_EQ(a->workers[0].gpus, std::vector<int>{1});
  EXPECT_DOUBLE_EQ(a->workers[0].cpu, 0.5);
  EXPECT_FALSE(a->has_images);  // an older server: the prefetches are left as they are
  // Images to prefetch, and a worker's image, carry the same fields.
  a = DecodeText(R"({"version":5,"images":[{"image":"r/i:1","insecureRegistry":true,
      "registryAuth":{"username":"u","password":"p"}}],"workers":[{"workerId":"w",
      "image":"r/i:1","insecureRegistry":true,"registryAuth":{"username":"u","password":"p"}}]})",
                 DecodeAssignment);
  ASSERT_TRUE(a.ok());
  ASSERT_TRUE(a->has_images);
  ASSERT_EQ(a->images.size(), 1u);
  EXPECT_EQ(a->images[0], (ImagePrefetch{{"r/i:1", "u", "p", true}, ""}));
  EXPECT_EQ(a->workers[0].image, "r/i:1");
  EXPECT_EQ(a->workers[0].registry_username, "u");
  EXPECT_EQ(a->workers[0].registry_password, "p");
  EXPECT_TRUE(a->workers[0].insecure_registry);
}

TEST(NodeProtocolTest, Paths) {
  EXPECT_EQ(NodePath("n-1"), "/v1/nodes/n-1");
  EXPECT_EQ(AssignmentPath("n-1", -1, 2000), "/v1/nodes/n-1/assignment?version=-1&wait=2000");
  EXPECT_EQ(StatusPath("n-1"), "/v1/nodes/n-1/status");
  EXPECT_EQ(LogsPath("n-1"), "/v1/nodes/n-1/logs");
}

}  // namespace
}  // namespace gantry::protocol
