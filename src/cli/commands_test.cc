// The subcommands that call the API, against a fake server: the request each sends and what it
// prints (tables, and JSON with --json).

#include <gtest/gtest.h>

#include "cli/cli_test_util.h"

namespace gantry::cli {
namespace {

class CommandsTest : public CliTest {};

TEST_F(CommandsTest, EndpointLsPrintsATable) {
  server_.On("GET", "/v1/endpoints", 200,
             R"({"endpoints": [{"id": "echo", "name": "Echo", "gpuTypeIds": ["H100", "cpu"],
                 "workersMin": 0, "workersMax": 2, "version": 3},
                {"id": "gen", "name": "", "gpuTypeIds": ["cpu"], "workersMin": 1,
                 "workersMax": 1, "version": 1}]})");
  EXPECT_EQ(Run({"endpoint", "ls"}), 0) << err_;
  EXPECT_EQ(out_,
            "ID    NAME  GPUS            WORKERS  VERSION\n"
            "echo  Echo  [\"H100\",\"cpu\"]  0-2      3\n"
            "gen         [\"cpu\"]         1-1      1\n");
  http::Request r = OnlyRequest();
  EXPECT_EQ(r.method, "GET");
  EXPECT_EQ(r.target, "/v1/endpoints");
  EXPECT_EQ(r.header("Authorization"), "Bearer k-test");
  EXPECT_EQ(r.body, "");
}

TEST_F(CommandsTest, JsonPrintsTheReplyAsIs) {
  server_.On("GET", "/v1/endpoints", 200, R"({"endpoints": [{"id": "echo", "version": 2.0}]})");
  EXPECT_EQ(Run({"--json", "endpoint", "ls"}), 0) << err_;
  EXPECT_EQ(out_, "{\"endpoints\":[{\"id\":\"echo\",\"version\":2E0}]}\n");
}

TEST_F(CommandsTest, EndpointGetShowsSpecWorkersAndPulls) {
  server_.On("GET", "/v1/endpoints/my%20ep", 200,
             R"({"id": "my ep", "name": "n", "workersMin": 0, "workersMax": 2, "idleTimeout": 5,
                 "scalerType": "QUEUE_DELAY", "scalerValue": 4, "gpuTypeIds": ["cpu"],
                 "gpuCount": 1, "concurrency": 1, "executionTimeoutMs": 600000,
                 "maxAttempts": 3, "worker": {"command": ["python3"]}, "version": 7,
                 "jobs": {"inQueue": 1}, "image": "reg/img:1",
                 "workers": [{"id": "w-1", "state": "IDLE", "jobs": 4, "lastError": ""}],
                 "imagePulls": [{"nodeId": "n1", "state": "ready", "detail": ""}]})");
  EXPECT_EQ(Run({"endpoint", "get", "my ep"}), 0) << err_;
  EXPECT_EQ(out_,
            "id:            my ep\n"
            "name:          n\n"
            "workers:       min 0, max 2, idle timeout 5 s\n"
            "scaler:        QUEUE_DELAY 4\n"
            "gpus:          [\"cpu\"] x 1\n"
            "concurrency:   1\n"
            "exec timeout:  600000 ms, max attempts 3\n"
            "worker:        {\"command\":[\"python3\"]}\n"
            "version:       7\n"
            "jobs:          {\"inQueue\":1}\n"
            "workers:\n"
            "ID   STATE  JOBS  LAST ERROR\n"
            "w-1  IDLE   4     \n"
            "image:         reg/img:1\n"
            "image pulls:\n"
            "NODE  STATE  DETAIL\n"
            "n1    ready  \n");
  EXPECT_EQ(OnlyRequest().target, "/v1/endpoints/my%20ep");
}

TEST_F(CommandsTest, EndpointCreateSendsTheSpecFromFlags) {
  server_.On("POST", "/v1/endpoints", 200, R"({"id": "echo", "version": 1})");
  EXPECT_EQ(
      Run({"endpoint", "create", "echo", "--workers-max", "3", "--gpu", "H100", "--gpu", "cpu",
           "--flashboot", "false", "--env", "A=1=2", "--command", "python3", "handler.py"}),
      0)
      << err_;
  EXPECT_EQ(out_, "created endpoint echo\n");
  http::Request r = OnlyRequest();
  EXPECT_EQ(r.method, "POST");
  EXPECT_EQ(r.target, "/v1/endpoints");
  EXPECT_EQ(r.body,
            R"({"workersMax":3,"flashboot":false,"gpuTypeIds":["H100","cpu"],"env":{"A":"1=2"},)"
            R"("worker":{"command":["python3","handler.py"]},"id":"echo"})");
}

TEST_F(CommandsTest, EndpointCreateRefusesABadEnvPair) {
  EXPECT_EQ(Run({"endpoint", "create", "echo", "--env", "NOEQUALS"}), 2);
  EXPECT_EQ(err_, "gantry: --env expects KEY=VALUE, got 'NOEQUALS'\n");
  EXPECT_TRUE(server_.Requests().empty());
}

TEST_F(CommandsTest, EndpointUpdatePatches) {
  server_.On("PATCH", "/v1/endpoints/echo", 200, R"({"id": "echo", "version": 4})");
  EXPECT_EQ(Run({"endpoint", "update", "echo", "--idle-timeout", "9", "--workdir", "/w"}), 0);
  EXPECT_EQ(out_, "updated endpoint echo (version 4)\n");
  http::Request r = OnlyRequest();
  EXPECT_EQ(r.method, "PATCH");
  EXPECT_EQ(r.body, R"({"idleTimeout":9,"worker":{"workdir":"/w"}})");
}

TEST_F(CommandsTest, EndpointRmDeletes) {
  server_.On("DELETE", "/v1/endpoints/echo", 200, "{}");
  EXPECT_EQ(Run({"endpoint", "rm", "echo"}), 0);
  EXPECT_EQ(out_, "deleted endpoint echo\n");
  EXPECT_EQ(OnlyRequest().method, "DELETE");
}

TEST_F(CommandsTest, RunWaitsThroughRunsync) {
  server_.On("POST", "/v2/echo/runsync", 200,
             R"({"id": "j-1", "status": "COMPLETED", "output": {"b": 2}})");
  EXPECT_EQ(Run({"run", "echo", "--input", R"({"a": 1})", "--wait", "5000"}), 0) << err_;
  EXPECT_EQ(out_, "{\"b\":2}\n");
  http::Request r = OnlyRequest();
  EXPECT_EQ(r.method, "POST");
  EXPECT_EQ(r.target, "/v2/echo/runsync?wait=5000");
  EXPECT_EQ(r.body, R"({"input":{"a":1}})");
}

TEST_F(CommandsTest, RunOfAFailedJobExits1) {
  server_.On("POST", "/v2/echo/runsync", 200,
             R"({"id": "j-1", "status": "FAILED", "error": "boom"})");
  EXPECT_EQ(Run({"run", "echo", "--input", "1"}), 1);
  EXPECT_EQ(out_, "job j-1 is FAILED: boom\n");
  EXPECT_EQ(OnlyRequest().target, "/v2/echo/runsync?wait=90000");
}

TEST_F(CommandsTest, RunAsyncPrintsTheJobId) {
  server_.On("POST", "/v2/echo/run", 200, R"({"id": "j-2", "status": "IN_QUEUE"})");
  EXPECT_EQ(Run({"run", "echo", "--input", "{}", "--async"}), 0);
  EXPECT_EQ(out_, "j-2 IN_QUEUE\n");
  EXPECT_EQ(OnlyRequest().target, "/v2/echo/run");
}

TEST_F(CommandsTest, RunRefusesInputThatIsNotJson) {
  EXPECT_EQ(Run({"run", "echo", "--input", "{nope"}), 2);
  EXPECT_EQ(err_.rfind("gantry: --input is not valid JSON: ", 0), 0u) << err_;
  EXPECT_TRUE(server_.Requests().empty());
}

TEST_F(CommandsTest, StatusPrintsARow) {
  server_.On("GET", "/v2/echo/status/j-1", 200,
             R"({"id": "j-1", "status": "COMPLETED", "delayTime": 12, "executionTime": 340,
                 "workerId": "w-1", "output": "hi"})");
  EXPECT_EQ(Run({"status", "echo", "j-1"}), 0);
  EXPECT_EQ(out_,
            "ID   STATUS     DELAY MS  EXEC MS  WORKER\n"
            "j-1  COMPLETED  12        340      w-1\n"
            "output: hi\n");
}

TEST_F(CommandsTest, PsShowsColdStartPhases) {
  server_.On("GET", "/v1/workers", 200,
             R"({"workers": [{"id": "w-1", "endpointId": "echo", "state": "IDLE",
                 "nodeId": "n1", "gpuType": "cpu", "jobs": 2, "startPath": "fork",
                 "coldStart": {"receivedMs": 1, "spawnedMs": 5, "readyMs": null}},
                {"id": "w-2", "endpointId": "echo", "state": "PENDING", "nodeId": "n1",
                 "gpuType": "cpu", "jobs": 0, "startPath": ""}]})");
  EXPECT_EQ(Run({"ps", "echo"}), 0);
  EXPECT_EQ(out_,
            "ID   ENDPOINT  STATE    NODE  GPU  JOBS  PATH  RECEIVED/SPAWNED/READY MS\n"
            "w-1  echo      IDLE     n1    cpu  2     fork  1/5/-\n"
            "w-2  echo      PENDING  n1    cpu  0           -\n");
  EXPECT_EQ(OnlyRequest().target, "/v1/workers?endpoint=echo");
}

TEST_F(CommandsTest, NodesShowsTemplatesSnapshotsAndCounters) {
  server_.On("GET", "/v1/nodes", 200,
             R"({"nodes": [{"id": "n1", "alive": true, "cpuCores": 8, "memoryMb": 16000,
                 "gpus": [{}, {}], "workers": 1,
                 "templates": [{"endpointId": "echo", "version": 2, "state": "parked",
                                "container": true, "snapshot": true},
                               {"endpointId": "gen", "version": 1, "state": "",
                                "snapshot": true}],
                 "startCounters": {"forks": 3, "restores": 1, "forkFailures": 0,
                                   "evictions": 2}}]})");
  EXPECT_EQ(Run({"nodes"}), 0);
  EXPECT_EQ(out_,
            "NODE  ALIVE  CPUS  MEMORY MB  GPUS  WORKERS  TEMPLATES                 "
            "SNAPSHOTS     FORKS/RESTORES/FORK FAILURES/EVICTIONS\n"
            "n1    true   8     16000      2     1        echo@2:parked(container)  "
            "echo@2 gen@1  3/1/0/2\n");
}

TEST_F(CommandsTest, WorkerEnvPrintsQuotedExports) {
  server_.On("POST", "/v1/endpoints/echo/workers", 200,
             R"({"env": {"RUNPOD_POD_ID": "w-1", "ODD": "it's"}})");
  EXPECT_EQ(Run({"worker-env", "echo"}), 0);
  EXPECT_EQ(out_, "export RUNPOD_POD_ID='w-1'\nexport ODD='it'\\''s'\n");
}

}  // namespace
}  // namespace gantry::cli
