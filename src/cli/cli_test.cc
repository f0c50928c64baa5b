// cli::Main as a whole: argument errors, HTTP errors, where the server and key come from; and
// keys, usage and logs against a fake server.

#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "cli/cli_test_util.h"

namespace gantry::cli {
namespace {

namespace fs = std::filesystem;

constexpr char kHint[] =
    "hint: pass --api-key, set GANTRY_API_KEY, or put \"apiKey\" in "
    "~/.config/gantry/config.json\n";

TEST_F(CliTest, HelpExits0) {
  EXPECT_EQ(RunBare({"--help"}), 0);
  EXPECT_NE(out_.find("Subcommands:"), std::string::npos) << out_;
  EXPECT_NE(out_.find("deploy"), std::string::npos) << out_;
}

TEST_F(CliTest, HelpListsTheExitCodes) {
  EXPECT_EQ(RunBare({"--help"}), 0);
  EXPECT_NE(out_.find("Exit codes: 0 done; 1 the job failed, or the server refused the request; "
                      "2 bad usage;\n3 the server cannot be reached; 4 the job did not finish "
                      "within the wait."),
            std::string::npos)
      << out_;
}

// CLI11 shows a negated flag ("!--no-templates") as "--no-templates{false}".
TEST_F(CliTest, NoFlagInAnyHelpShowsADefaultInBraces) {
  const std::vector<std::vector<std::string>> commands = {{"server"},
                                                          {"agent"},
                                                          {"up"},
                                                          {"endpoint", "create"},
                                                          {"endpoint", "update"},
                                                          {"run"},
                                                          {"status"},
                                                          {"keys", "create"},
                                                          {"ps"},
                                                          {"nodes"},
                                                          {"deploy"},
                                                          {"usage"},
                                                          {"logs"},
                                                          {"worker-env"}};
  for (auto args : commands) {
    args.push_back("--help");
    EXPECT_EQ(RunBare(args), 0) << args[0];
    EXPECT_EQ(out_.find("{false}"), std::string::npos) << out_;
    EXPECT_EQ(out_.find("{true}"), std::string::npos) << out_;
  }
  EXPECT_EQ(RunBare({"up", "--help"}), 0);
  EXPECT_NE(out_.find("--no-templates "), std::string::npos) << out_;
  EXPECT_NE(out_.find("--no-snapshots "), std::string::npos) << out_;
}

TEST_F(CliTest, NoSubcommandExits2) {
  EXPECT_EQ(RunBare({}), 2);
  EXPECT_NE(err_.find("A subcommand is required"), std::string::npos) << err_;
}

TEST_F(CliTest, MissingRequiredArgumentsExit2WithAMessage) {
  EXPECT_EQ(Run({"run", "echo"}), 2);
  EXPECT_NE(err_.find("--input is required"), std::string::npos) << err_;
  EXPECT_EQ(Run({"status", "echo"}), 2);
  EXPECT_NE(err_.find("job is required"), std::string::npos) << err_;
  EXPECT_EQ(Run({"endpoint"}), 2);
  EXPECT_NE(err_.find("A subcommand is required"), std::string::npos) << err_;
  EXPECT_EQ(Run({"endpoint", "create", "--flashboot", "maybe"}), 2);
  EXPECT_NE(err_.find("--flashboot"), std::string::npos) << err_;
  EXPECT_TRUE(server_.Requests().empty());
}

TEST_F(CliTest, AnHttpErrorPrintsTheServersMessageAndExits1) {
  server_.On("GET", "/v1/endpoints/nope", 404,
             R"({"error": {"code": "NOT_FOUND", "message": "no endpoint nope"}})");
  EXPECT_EQ(Run({"endpoint", "get", "nope"}), 1);
  EXPECT_EQ(out_, "");
  EXPECT_EQ(err_, "gantry: no endpoint nope (HTTP 404)\n");
}

TEST_F(CliTest, AnErrorThatIsNotJsonIsPrintedAsIs) {
  server_.On("GET", "/v1/nodes", 502, "bad gateway");
  EXPECT_EQ(Run({"nodes"}), 1);
  EXPECT_EQ(err_, "gantry: bad gateway (HTTP 502)\n");
}

TEST_F(CliTest, Unauthorized401GivesAHint) {
  server_.On("GET", "/v1/keys", 401,
             R"({"error": {"code": "UNAUTHENTICATED", "message": "bad API key"}})");
  EXPECT_EQ(Run({"keys", "ls"}), 1);
  EXPECT_EQ(err_, std::string("gantry: bad API key (HTTP 401)\n") + kHint);
}

TEST_F(CliTest, AnUnreachableServerExits3) {
  EXPECT_EQ(RunBare({"--url", "http://127.0.0.1:1", "nodes"}), 3);
  EXPECT_EQ(err_.rfind("gantry: cannot reach the server at http://127.0.0.1:1: ", 0), 0u) << err_;
}

TEST_F(CliTest, ABadServerUrlExits2) {
  EXPECT_EQ(RunBare({"--url", "ftp://nowhere", "nodes"}), 2);
  EXPECT_EQ(err_.rfind("gantry: bad server URL ftp://nowhere: ", 0), 0u) << err_;
}

TEST_F(CliTest, UrlAndKeyFromTheEnvironment) {
  server_.On("GET", "/v1/nodes", 200, R"({"nodes": []})");
  setenv("GANTRY_URL", (server_.url() + "/").c_str(), 1);
  setenv("GANTRY_API_KEY", "k-env", 1);
  EXPECT_EQ(RunBare({"nodes"}), 0) << err_;
  EXPECT_EQ(OnlyRequest().header("Authorization"), "Bearer k-env");
  unsetenv("GANTRY_URL");
  unsetenv("GANTRY_API_KEY");
}

TEST_F(CliTest, KeyFromTheDataDirectory) {
  server_.On("GET", "/v1/nodes", 200, R"({"nodes": []})");
  fs::path dir = fs::path(testing::TempDir()) / ("cli_test_" + std::to_string(getpid()));
  fs::create_directories(dir);
  std::ofstream(dir / "admin.key") << "k-file\n";
  setenv("GANTRY_DATA_DIR", dir.c_str(), 1);
  EXPECT_EQ(RunBare({"--url", server_.url(), "nodes"}), 0) << err_;
  EXPECT_EQ(OnlyRequest().header("Authorization"), "Bearer k-file");
  unsetenv("GANTRY_DATA_DIR");
  fs::remove_all(dir);
}

TEST_F(CliTest, UpAndServerKeepTheirDataInGantryDataDir) {
  EXPECT_EQ(RunBare({"up", "--help"}), 0);
  EXPECT_NE(out_.find("--data-dir TEXT=./gantry-data"), std::string::npos) << out_;
  setenv("GANTRY_DATA_DIR", "/srv/gantry", 1);
  for (const char* command : {"up", "server"}) {
    EXPECT_EQ(RunBare({command, "--help"}), 0);
    EXPECT_NE(out_.find("--data-dir TEXT=/srv/gantry"), std::string::npos) << out_;
  }
  unsetenv("GANTRY_DATA_DIR");
}

TEST_F(CliTest, KeysCreateLsRevoke) {
  server_.On("POST", "/v1/keys", 200,
             R"({"id": "k-1", "name": "ci", "scope": "invoke", "endpoints": ["echo", "sd"],
                 "key": "gk_secret"})");
  server_.On("GET", "/v1/keys", 200,
             R"({"keys": [{"id": "k-1", "name": "ci", "scope": "invoke", "endpoints": ["echo"],
                           "prefix": "gk_ab", "createdAt": 1700000000000},
                          {"id": "k-2", "name": "gpu1", "scope": "node", "node": "gpu1",
                           "prefix": "gk_cd", "createdAt": 1700000000000}]})");
  server_.On("DELETE", "/v1/keys/k-1", 200, "{}");
  // The key alone on stdout (KEY=$(gantry keys create ...)); what it is on stderr.
  EXPECT_EQ(Run({"keys", "create", "--name", "ci", "--endpoint", "echo", "--endpoint", "sd"}), 0);
  EXPECT_EQ(out_, "gk_secret\n");
  EXPECT_EQ(err_,
            "created key k-1 (ci, scope invoke, endpoints echo, sd); it is shown only now:\n");
  EXPECT_EQ(Run({"keys", "ls"}), 0);
  EXPECT_EQ(out_,
            "ID   NAME  SCOPE   LIMITED TO      PREFIX    CREATED (UTC)\n"
            "k-1  ci    invoke  endpoints echo  gk_ab...  2023-11-14 22:13:20\n"
            "k-2  gpu1  node    node gpu1       gk_cd...  2023-11-14 22:13:20\n");
  EXPECT_EQ(Run({"keys", "revoke", "k-1"}), 0);
  EXPECT_EQ(out_, "revoked key k-1\n");
  auto requests = server_.Requests();
  ASSERT_EQ(requests.size(), 3u);
  EXPECT_EQ(requests[0].body, R"({"name":"ci","scope":"invoke","endpoints":["echo","sd"]})");
  EXPECT_EQ(requests[2].method, "DELETE");
  // A scope the server has not is refused here, as a usage error.
  EXPECT_EQ(Run({"keys", "create", "--scope", "root"}), 2);
}

TEST_F(CliTest, UsageSinceIsADurationBackFromNow) {
  server_.On("GET", "/v1/usage", 200,
             R"({"byEndpoint": [{"endpointId": "echo", "gpuType": "H100", "gpuCount": 1,
                                 "workers": 2, "billedSeconds": 120, "cost": 0.1392}],
                 "jobs": [{"endpointId": "echo", "jobs": 10, "executionMs": 4000}],
                 "totalBilledSeconds": 120, "totalCost": 0.1392})");
  EXPECT_EQ(Run({"usage", "--since", "24h", "--endpoint", "echo"}), 0) << err_;
  // The job counts are all-time totals: left out, and said so.
  EXPECT_EQ(out_,
            "ENDPOINT  GPU      WORKERS  BILLED S  COST\n"
            "echo      H100 x1  2        120       $0.1392\n"
            "\n"
            "total: 120 billed seconds, $0.1392\n");
  EXPECT_EQ(err_,
            "note: job counts are all-time totals, so they are left out with --since (gantry usage "
            "without it shows them)\n");
  EXPECT_EQ(OnlyRequest().target,
            "/v1/usage?since=" + std::to_string(kNowMs - 86'400'000) + "&endpoint=echo");
}

TEST_F(CliTest, UsageShowsAllTimeJobsAndCpuWorkersWithoutACount) {
  server_.On("GET", "/v1/usage", 200,
             R"({"byEndpoint": [{"endpointId": "echo", "gpuType": "cpu", "gpuCount": 0,
                                 "workers": 1, "billedSeconds": 3, "cost": 0.0003},
                                {"endpointId": "big", "gpuType": "H100", "gpuCount": 2,
                                 "workers": 1, "billedSeconds": 1, "cost": 0.01}],
                 "jobs": [{"endpointId": "echo", "jobs": 10, "executionMs": 4000}],
                 "totalBilledSeconds": 4, "totalCost": 0.0103})");
  EXPECT_EQ(Run({"usage"}), 0) << err_;
  EXPECT_EQ(out_,
            "ENDPOINT  GPU      WORKERS  BILLED S  COST\n"
            "echo      cpu      1        3         $0.0003\n"
            "big       H100 x2  1        1         $0.0100\n"
            "\n"
            "ENDPOINT  JOBS (ALL TIME)  EXECUTION MS (ALL TIME)\n"
            "echo      10               4000\n"
            "\n"
            "total: 4 billed seconds, $0.0103\n");
  EXPECT_EQ(err_, "");
}

TEST_F(CliTest, UsageSinceUnits) {
  server_.On("GET", "/v1/usage", 200,
             R"({"byEndpoint": [], "jobs": [], "totalBilledSeconds": 0, "totalCost": 0})");
  const std::pair<const char*, int64_t> cases[] = {
      {"90s", 90'000}, {"30m", 1'800'000}, {"1.5h", 5'400'000}, {"7d", 604'800'000}};
  for (const auto& [since, back_ms] : cases) {
    EXPECT_EQ(Run({"usage", "--since", since}), 0) << since;
    EXPECT_EQ(server_.Requests().back().target,
              "/v1/usage?since=" + std::to_string(kNowMs - back_ms))
        << since;
  }
  EXPECT_EQ(Run({"usage"}), 0);
  EXPECT_EQ(server_.Requests().back().target, "/v1/usage?since=0");
  EXPECT_EQ(out_, "ENDPOINT  GPU  WORKERS  BILLED S  COST\n\ntotal: 0 billed seconds, $0.0000\n");
}

TEST_F(CliTest, UsageRefusesABadSince) {
  for (const char* since : {"5x", "h", "-1h", "24"}) {
    EXPECT_EQ(Run({"usage", "--since", since}), 2) << since;
    EXPECT_EQ(err_, "gantry: --since expects a duration like 30m, 24h or 7d\n") << since;
  }
  EXPECT_TRUE(server_.Requests().empty());
}

TEST_F(CliTest, LogsPrintsWorkerAndText) {
  server_.On("GET", "/v1/logs", 200,
             R"({"lines": [{"seq": 1, "workerId": "w-1", "text": "hello"},
                           {"seq": 2, "workerId": "w-2", "text": "bye"}]})");
  EXPECT_EQ(Run({"logs", "echo", "--worker", "w-1", "--job", "j 1"}), 0);
  EXPECT_EQ(out_, "w-1 hello\nw-2 bye\n");
  EXPECT_EQ(OnlyRequest().target, "/v1/logs?endpoint=echo&after=0&worker=w-1&job=j%201");
}

TEST_F(CliTest, LogsWithJsonPrintsOneObjectALine) {
  server_.On("GET", "/v1/logs", 200, R"({"lines": [{"seq": 1, "workerId": "w-1", "text": "a"}]})");
  EXPECT_EQ(Run({"--json", "logs", "echo"}), 0);
  EXPECT_EQ(out_, "{\"seq\":1,\"workerId\":\"w-1\",\"text\":\"a\"}\n");
}

}  // namespace
}  // namespace gantry::cli
