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
  EXPECT_EQ(out_, "{\"endpoints\":[{\"id\":\"echo\",\"version\":2.0}]}\n");
}

TEST_F(CommandsTest, JsonAndTheServerMayComeAfterTheSubcommand) {
  server_.On("GET", "/v1/workers", 200, R"({"workers": []})");
  server_.On("GET", "/v1/endpoints/echo", 200, R"({"id": "echo"})");
  EXPECT_EQ(Run({"ps", "--json"}), 0) << err_;
  EXPECT_EQ(out_, "{\"workers\":[]}\n");
  EXPECT_EQ(Run({"endpoint", "get", "echo", "--json"}), 0) << err_;
  EXPECT_EQ(out_, "{\"id\":\"echo\"}\n");
  EXPECT_EQ(Run({"endpoint", "--json", "get", "echo"}), 0) << err_;
  EXPECT_EQ(out_, "{\"id\":\"echo\"}\n");
  EXPECT_EQ(RunBare({"ps", "--url", server_.url(), "--api-key", "k-after", "--json"}), 0) << err_;
  EXPECT_EQ(out_, "{\"workers\":[]}\n");
  EXPECT_EQ(server_.Requests().back().header("Authorization"), "Bearer k-after");
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
                 "runtime": {"sandbox": "agent's user: --insecure-same-user",
                             "network": "host network: --host-network"},
                 "startCounters": {"forks": 3, "restores": 1, "forkFailures": 0,
                                   "evictions": 2}}]})");
  EXPECT_EQ(Run({"nodes"}), 0);
  EXPECT_EQ(
      out_,
      "NODE  ALIVE  CPUS  MEMORY MB  GPUS  WORKERS  TEMPLATES                 "
      "SNAPSHOTS     FORKS/RESTORES/FORK FAILURES/EVICTIONS  WORKERS RUN AS                      "
      "WORKER NETWORK\n"
      "n1    true   8     16000      2     1        echo@2:parked(container)  "
      "echo@2 gen@1  3/1/0/2                                 agent's user: "
      "--insecure-same-user  host network: --host-network\n");
}

TEST_F(CommandsTest, WorkerEnvPrintsQuotedExports) {
  server_.On("POST", "/v1/endpoints/echo/workers", 200,
             R"({"env": {"RUNPOD_POD_ID": "w-1", "ODD": "it's"}})");
  EXPECT_EQ(Run({"worker-env", "echo", "--sdk-path", "/opt/sdk"}), 0);
  // The SDK goes on PYTHONPATH before the shell's own, as `gantry up` puts it on its workers'.
  EXPECT_EQ(out_,
            "export RUNPOD_POD_ID='w-1'\nexport ODD='it'\\''s'\n"
            "export PYTHONPATH='/opt/sdk'\"${PYTHONPATH:+:$PYTHONPATH}\"\n"
            "export PYTHONUNBUFFERED='1'\n");
  EXPECT_EQ(err_, "");
}

// Regression: README's `eval "$(gantry worker-env EP)"` then the handler failed with "No
// module named 'runpod'". The endpoint's own PYTHONPATH comes first (a bundle may bring its own
// SDK); a name no shell takes is left out rather than breaking the eval.
TEST_F(CommandsTest, WorkerEnvPutsTheSdkAfterTheEndpointsPythonPath) {
  server_.On("POST", "/v1/endpoints/echo/workers", 200,
             R"({"env": {"PYTHONPATH": "/app", "PYTHONUNBUFFERED": "0", "A B": "x"}})");
  EXPECT_EQ(Run({"worker-env", "echo", "--sdk-path", "/opt/sdk"}), 0);
  EXPECT_EQ(out_,
            "export PYTHONUNBUFFERED='0'\n"
            "export PYTHONPATH='/app:/opt/sdk'\"${PYTHONPATH:+:$PYTHONPATH}\"\n");
  EXPECT_NE(err_.find("skipped A B"), std::string::npos);
}

}  // namespace
}  // namespace gantry::cli
