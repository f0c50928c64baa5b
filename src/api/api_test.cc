#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <regex>
#include <sstream>
#include <tuple>

#include "api/api_test_fixture.h"

namespace gantry::api {
namespace {

TEST_F(ApiTest, HealthzIsPublicAndEverythingElseNeedsAKey) {
  EXPECT_EQ(Do("GET", "/healthz", "", "").status, 200);
  auto r = Do("GET", "/v1/endpoints", "", "");
  EXPECT_EQ(r.status, 401);
  EXPECT_NE(r.body.find("missing API key"), std::string::npos);
  r = Do("GET", "/v1/endpoints", "", "Bearer nope");
  EXPECT_EQ(r.status, 401);
  EXPECT_NE(r.body.find("invalid API key"), std::string::npos);
  EXPECT_EQ(Do("GET", "/v1/endpoints", "", key_).status, 200);  // a raw key works too
  // A path no route has: 401 without a key (no hint of what exists), 404 with one.
  EXPECT_EQ(Do("GET", "/v1/secret-things", "", "").status, 401);
  r = Do("GET", "/v1/secret-things");
  EXPECT_EQ(r.status, 404);
  EXPECT_NE(r.body.find("no such route: GET /v1/secret-things"), std::string::npos);
  EXPECT_EQ(Do("DELETE", "/v1/endpoints").status, 404);  // a known path, another method
}

TEST_F(ApiTest, RunAnswersOnceTheJobIsDurable) {
  ASSERT_EQ(Do("POST", "/v1/endpoints", R"({"id":"ep"})").status, 201);
  http::Request req;
  req.method = "POST";
  req.target = "/v2/ep/run";
  req.body = R"({"input":{"x":1}})";
  req.headers.push_back({"Authorization", "Bearer " + key_});
  auto resp = std::make_shared<RecordingResponder>();
  api_.Handle(std::move(req), resp);
  EXPECT_EQ(resp->sends, 0);  // not before the store has it
  store_.FlushDeferred();
  ASSERT_EQ(resp->sends, 1);
  EXPECT_EQ(resp->last.status, 200);
  json::value v = J(resp->last);
  EXPECT_EQ(v.at("status").as_string(), "IN_QUEUE");
  std::string id(v.at("id").as_string());
  ASSERT_NE(store_.job(id), nullptr);
  // Its status, by GET or POST, under its endpoint only.
  EXPECT_EQ(J(Do("GET", "/v2/ep/status/" + id)).at("status").as_string(), "IN_QUEUE");
  EXPECT_EQ(Do("POST", "/v2/ep/status/" + id).status, 200);
  ASSERT_EQ(Do("POST", "/v1/endpoints", R"({"id":"other"})").status, 201);
  EXPECT_EQ(Do("GET", "/v2/other/status/" + id).status, 404);
  EXPECT_EQ(J(Do("POST", "/v2/ep/cancel/" + id)).at("status").as_string(), "CANCELLED");
}

TEST_F(ApiTest, BadSubmissionsAreRefusedWithTheirReason) {
  ASSERT_EQ(Do("POST", "/v1/endpoints", R"({"id":"ep"})").status, 201);
  EXPECT_EQ(Do("POST", "/v2/nope/run", R"({"input":1})").status, 404);
  EXPECT_EQ(ErrorCode(Do("POST", "/v2/ep/run", "{")), "invalid_argument");
  EXPECT_EQ(ErrorCode(Do("POST", "/v2/ep/run", "[]")), "invalid_argument");
  auto r = Do("POST", "/v2/ep/run", R"({"inpt":1})");
  EXPECT_NE(r.body.find("missing \\\"input\\\""), std::string::npos) << r.body;
  EXPECT_EQ(Do("POST", "/v2/ep/run", std::string(2000, ' ')).status, 413);
  r = Do("POST", "/v2/ep/run", R"({"input":1,"policy":{"ttl":"x"}})");
  EXPECT_NE(r.body.find("policy.ttl"), std::string::npos);
  r = Do("POST", "/v2/ep/run", R"({"input":1,"policy":{"color":1}})");
  EXPECT_NE(r.body.find("unknown policy field: color"), std::string::npos);
  r = Do("POST", "/v2/ep/run", R"({"input":1,"webhook":"ftp://x"})");
  EXPECT_EQ(r.status, 400);
  EXPECT_EQ(Do("POST", "/v2/ep/runsync?wait=soon", R"({"input":1})").status, 400);
}

// 1e400 parses as infinity, and a client's json.dumps writes NaN: neither is JSON, so a job
// holding one could never be handed to a worker or shown. Refused, naming the value; none queued.
TEST_F(ApiTest, NonFiniteNumbersInAnInputAreRefusedWithTheirPath) {
  ASSERT_EQ(Do("POST", "/v1/endpoints", R"({"id":"ep"})").status, 201);
  auto r = Do("POST", "/v2/ep/run", R"({"input":{"a":[1,2,3,1e400]}})");
  EXPECT_EQ(r.status, 400);
  EXPECT_EQ(ErrorMessage(r).substr(0, 35), "input.a[3] is not a finite number: ");
  r = Do("POST", "/v2/ep/runsync", R"({"input": {"a": [1, 2, 3, NaN]}})");
  EXPECT_EQ(r.status, 400);
  EXPECT_EQ(ErrorMessage(r), "input.a[3] is not a finite number: JSON has no NaN");
  r = Do("POST", "/v2/ep/run", R"({"input":{"x":-Infinity}})");
  EXPECT_EQ(ErrorMessage(r), "input.x is not a finite number: JSON has no Infinity");
  r = Do("POST", "/v2/ep/run", R"({"input":-1e400})");
  EXPECT_EQ(ErrorMessage(r).substr(0, 33), "input is not a finite number: it ");
  r = Do("POST", "/v2/ep/run", R"({"input":1,"s3Config":{"n":1e999}})");
  EXPECT_EQ(ErrorMessage(r).substr(0, 36), "s3Config.n is not a finite number: i");
  EXPECT_EQ(J(Do("GET", "/v2/ep/health")).at("jobs").at("inQueue").as_int64(), 0);
  // A finite input is taken, and handed on with its numbers as people write them.
  auto [wid, secret] = RegisterWorker("ep");
  ASSERT_EQ(Do("POST", "/v2/ep/run", R"({"input":{"a":0.1,"b":1.0,"c":3.68e-4,"d":1E16}})").status,
            200);
  auto got = Do("GET", "/v2/ep/job-take/" + wid, "", secret);
  EXPECT_NE(got.body.find(R"("input":{"a":0.1,"b":1.0,"c":0.000368,"d":1e+16})"), std::string::npos)
      << got.body;
}

// A result the server refuses is named, so that the worker can tell its user which value it
// was; the job is still the worker's, which can then post an error instead.
TEST_F(ApiTest, NonFiniteNumbersInAResultAreRefusedWithTheirPath) {
  ASSERT_EQ(Do("POST", "/v1/endpoints", R"({"id":"ep"})").status, 201);
  auto [wid, secret] = RegisterWorker("ep");
  std::string job(J(Do("POST", "/v2/ep/run", R"({"input":1})")).at("id").as_string());
  ASSERT_EQ(Do("GET", "/v2/ep/job-take/" + wid, "", secret).status, 200);
  const std::string done = "/v2/ep/job-done/" + wid + "/" + job;
  auto r = Do("POST", done, R"({"output":{"x":[1,2,1e999]}})", secret);
  EXPECT_EQ(r.status, 400);
  EXPECT_EQ(ErrorMessage(r).substr(0, 36), "output.x[2] is not a finite number: ");
  r = Do("POST", "/v2/ep/job-stream/" + wid + "/" + job, R"({"output": NaN})", secret);
  EXPECT_EQ(r.status, 400);
  EXPECT_EQ(ErrorMessage(r), "output is not a finite number: JSON has no NaN");
  r = Do("POST", done, R"({"status":"IN_PROGRESS","output":{"p":[Infinity]}})", secret);
  EXPECT_EQ(ErrorMessage(r), "output.p[0] is not a finite number: JSON has no Infinity");
  EXPECT_EQ(J(Do("GET", "/v2/ep/status/" + job)).at("status").as_string(), "IN_PROGRESS");
  ASSERT_EQ(Do("POST", done, R"({"error":"output.x[2] is infinite"})", secret).status, 200);
  EXPECT_EQ(J(Do("GET", "/v2/ep/status/" + job)).at("status").as_string(), "FAILED");
}

TEST_F(ApiTest, NonFiniteNumbersInAnEndpointSpecAreRefusedWithTheirPath) {
  auto r = Do("POST", "/v1/endpoints", R"({"id":"ep","cpu":1e400})");
  EXPECT_EQ(r.status, 400);
  EXPECT_EQ(ErrorMessage(r).substr(0, 29), "cpu is not a finite number: i");
  ASSERT_EQ(Do("POST", "/v1/endpoints", R"({"id":"ep","cpu":0.5})").status, 201);
  r = Do("PATCH", "/v1/endpoints/ep", R"({"cpu": NaN})");
  EXPECT_EQ(ErrorMessage(r), "cpu is not a finite number: JSON has no NaN");
  r = Do("GET", "/v1/endpoints/ep");
  EXPECT_NE(r.body.find(R"("cpu":0.5)"), std::string::npos) << r.body;
}

TEST_F(ApiTest, WorkerRoutesTakeTheWorkersOwnSecretOnly) {
  ASSERT_EQ(Do("POST", "/v1/endpoints", R"({"id":"ep"})").status, 201);
  auto reg = J(Do("POST", "/v1/endpoints/ep/workers"));
  std::string wid(reg.at("workerId").as_string());
  std::string secret(reg.at("env").at("RUNPOD_AI_API_KEY").as_string());
  EXPECT_EQ(reg.at("env").at("RUNPOD_WEBHOOK_PING").as_string(),
            "http://gantry.test/v2/ep/ping/" + wid);
  auto other = J(Do("POST", "/v1/endpoints/ep/workers"));
  std::string other_secret(other.at("env").at("RUNPOD_AI_API_KEY").as_string());

  const std::string take = "/v2/ep/job-take/" + wid;
  EXPECT_EQ(Do("GET", take, "", "Bearer " + key_).status, 401);  // an API key is no worker's
  EXPECT_EQ(Do("GET", take, "", "Bearer " + other_secret).status, 403);
  EXPECT_EQ(Do("GET", take, "", "Bearer " + secret).status, 204);  // nothing queued
  auto run = J(Do("POST", "/v2/ep/run", R"({"input":{"n":7}})"));
  std::string job(run.at("id").as_string());
  auto got = Do("GET", take, "", secret);
  ASSERT_EQ(got.status, 200);
  EXPECT_EQ(J(got).at("id").as_string(), job);
  EXPECT_EQ(J(got).at("input").at("n").as_int64(), 7);
  EXPECT_EQ(Do("GET", "/v2/ep/ping/" + wid + "?job_id=" + job, "", secret).status, 200);
  EXPECT_EQ(Do("POST", "/v2/ep/job-stream/" + wid + "/" + job, R"({"output":"a"})", secret).status,
            200);
  EXPECT_EQ(Do("POST", "/v2/ep/job-done/" + wid + "/" + job, R"({"output":42})", secret).status,
            200);
  auto st = J(Do("GET", "/v2/ep/status/" + job));
  EXPECT_EQ(st.at("status").as_string(), "COMPLETED");
  EXPECT_EQ(st.at("output").as_int64(), 42);
}

// RunPod's JavaScript SDK falls back to /status-sync when a job outlives runSync's wait.
TEST_F(ApiTest, StatusSyncAnswersWhenTheJobEndsOrTheWaitPasses) {
  ASSERT_EQ(Do("POST", "/v1/endpoints", R"({"id":"ep"})").status, 201);
  auto [wid, secret] = RegisterWorker("ep");
  std::string job(J(Do("POST", "/v2/ep/run", R"({"input":1})")).at("id").as_string());
  auto waiting = Start("GET", "/v2/ep/status-sync/" + job + "?wait=5000");
  EXPECT_EQ(waiting->sends, 0);  // held: the job runs on
  ASSERT_EQ(Do("GET", "/v2/ep/job-take/" + wid, "", secret).status, 200);
  Advance(2000);
  EXPECT_EQ(waiting->sends, 0);
  ASSERT_EQ(Do("POST", "/v2/ep/job-done/" + wid + "/" + job, R"({"output":9})", secret).status,
            200);
  ASSERT_EQ(waiting->sends, 1);  // at once when it ends
  EXPECT_EQ(J(waiting->last).at("status").as_string(), "COMPLETED");
  EXPECT_EQ(J(waiting->last).at("output").as_int64(), 9);
  // An ended job answers at once; one that runs on answers as it is when the wait passes.
  EXPECT_EQ(J(Do("GET", "/v2/ep/status-sync/" + job)).at("status").as_string(), "COMPLETED");
  std::string queued(J(Do("POST", "/v2/ep/run", R"({"input":2})")).at("id").as_string());
  waiting = Start("GET", "/v2/ep/status-sync/" + queued + "?wait=10");  // clamped to 1 s
  Advance(999);
  EXPECT_EQ(waiting->sends, 0);
  Advance(1);
  ASSERT_EQ(waiting->sends, 1);
  EXPECT_EQ(J(waiting->last).at("status").as_string(), "IN_QUEUE");
  EXPECT_EQ(Do("GET", "/v2/ep/status-sync/" + queued + "?wait=x").status, 400);
  EXPECT_EQ(Do("GET", "/v2/ep/status-sync/nope").status, 404);
}

TEST_F(ApiTest, StreamWaitsForAChunkWhileTheJobRuns) {
  ASSERT_EQ(Do("POST", "/v1/endpoints", R"({"id":"ep"})").status, 201);
  auto [wid, secret] = RegisterWorker("ep");
  std::string job(J(Do("POST", "/v2/ep/run", R"({"input":1})")).at("id").as_string());
  ASSERT_EQ(Do("GET", "/v2/ep/job-take/" + wid, "", secret).status, 200);
  auto reader = Start("GET", "/v2/ep/stream/" + job);
  EXPECT_EQ(reader->sends, 0);  // nothing pending: it waits for a chunk
  ASSERT_EQ(Do("POST", "/v2/ep/job-stream/" + wid + "/" + job, R"({"output":"a"})", secret).status,
            200);
  ASSERT_EQ(reader->sends, 1);
  EXPECT_EQ(reader->last.body, R"({"status":"IN_PROGRESS","stream":[{"output":"a"}]})");
  // None comes within the second: it answers with none.
  reader = Start("GET", "/v2/ep/stream/" + job);
  Advance(999);
  EXPECT_EQ(reader->sends, 0);
  Advance(1);
  ASSERT_EQ(reader->sends, 1);
  EXPECT_EQ(reader->last.body, R"({"status":"IN_PROGRESS","stream":[]})");
  // A pending chunk, or an ended job, answers at once.
  ASSERT_EQ(Do("POST", "/v2/ep/job-stream/" + wid + "/" + job, R"({"output":"b"})", secret).status,
            200);
  EXPECT_EQ(Do("GET", "/v2/ep/stream/" + job).body,
            R"({"status":"IN_PROGRESS","stream":[{"output":"b"}]})");
  reader = Start("GET", "/v2/ep/stream/" + job);
  ASSERT_EQ(Do("POST", "/v2/ep/job-done/" + wid + "/" + job + "?isStream=true", R"({"output":[]})",
               secret)
                .status,
            200);
  ASSERT_EQ(reader->sends, 1);  // the job ended
  EXPECT_EQ(reader->last.body, R"({"status":"COMPLETED","stream":[]})");
  EXPECT_EQ(Do("GET", "/v2/ep/stream/" + job).body, R"({"status":"COMPLETED","stream":[]})");
}

TEST_F(ApiTest, RequestsPagesTheEndpointsJobsNewestFirst) {
  ASSERT_EQ(Do("POST", "/v1/endpoints", R"({"id":"ep"})").status, 201);
  ASSERT_EQ(Do("POST", "/v1/endpoints", R"({"id":"other"})").status, 201);
  std::vector<std::string> ids;
  for (int i = 0; i < 3; ++i) {
    ids.emplace_back(J(Do("POST", "/v2/ep/run", R"({"input":1})")).at("id").as_string());
    clock_.Advance(10);
  }
  Do("POST", "/v2/other/run", R"({"input":1})");
  auto page = J(Do("GET", "/v2/ep/requests?limit=2"));
  const auto& first = page.at("requests").as_array();
  ASSERT_EQ(first.size(), 2u);
  EXPECT_EQ(first[0].at("id").as_string(), ids[2]);
  EXPECT_EQ(first[1].at("id").as_string(), ids[1]);
  EXPECT_EQ(first[0].at("status").as_string(), "IN_QUEUE");
  EXPECT_EQ(first[0].at("delayTime").as_int64(), 10);
  EXPECT_TRUE(first[0].at("startedAt").is_null());
  EXPECT_TRUE(first[0].at("workerId").is_null());
  ASSERT_TRUE(page.at("nextCursor").is_string());
  auto rest = J(Do(
      "GET", "/v2/ep/requests?limit=2&cursor=" + std::string(page.at("nextCursor").as_string())));
  ASSERT_EQ(rest.at("requests").as_array().size(), 1u);
  EXPECT_EQ(rest.at("requests").as_array()[0].at("id").as_string(), ids[0]);
  EXPECT_TRUE(rest.at("nextCursor").is_null());
  EXPECT_EQ(J(Do("GET", "/v2/ep/requests")).at("requests").as_array().size(), 3u);
  EXPECT_EQ(Do("GET", "/v2/ep/requests?limit=0").status, 400);
  EXPECT_EQ(Do("GET", "/v2/ep/requests?limit=101").status, 400);
  EXPECT_EQ(Do("GET", "/v2/ep/requests?cursor=abc").status, 400);
  EXPECT_EQ(Do("GET", "/v2/nope/requests").status, 404);
}

// An endpoint no live node could ever run: /runsync answers within a second with the job still
// queued and the reason; /health says it too.
TEST_F(ApiTest, RunsyncOfAnUnplaceableEndpointSaysWhyWithinASecond) {
  ASSERT_EQ(Do("POST", "/v1/nodes/n1", R"({"name":"n1","cpuCores":2,"memoryMb":4096})").status,
            200);
  ASSERT_EQ(Do("POST", "/v1/endpoints",
               R"({"id":"gpu","gpuTypeIds":["H100"],"worker":{"command":["x"]}})")
                .status,
            201);
  auto waiting = Start("POST", "/v2/gpu/runsync?wait=60000", R"({"input":1})");
  Advance(999);
  EXPECT_EQ(waiting->sends, 0);
  Advance(1);
  store_.FlushDeferred();  // the id it gives out is durable first
  ASSERT_EQ(waiting->sends, 1);
  auto reply = J(waiting->last);
  EXPECT_EQ(reply.at("status").as_string(), "IN_QUEUE");
  EXPECT_EQ(reply.at("reason").as_string(), "no live node has a GPU of type H100 (n1: no GPUs)");
  auto health = J(Do("GET", "/v2/gpu/health"));
  EXPECT_EQ(health.at("unplaceable").as_string(),
            "no live node has a GPU of type H100 (n1: no GPUs)");
  EXPECT_EQ(health.at("jobs").at("inQueue").as_int64(), 1);  // it stays queued
  // One that fits has no such field.
  ASSERT_EQ(Do("POST", "/v1/endpoints", R"({"id":"cpu","worker":{"command":["x"]}})").status, 201);
  EXPECT_FALSE(J(Do("GET", "/v2/cpu/health")).as_object().contains("unplaceable"));
}

TEST_F(ApiTest, RoutesListsTheTable) {
  auto v = J(Do("GET", "/v1/routes"));
  const auto& routes = v.at("routes").as_array();
  ASSERT_EQ(routes.size(), api_.table().routes().size());
  bool found = false;
  for (const auto& r : routes) {
    if (r.at("method") == "POST" && r.at("path") == "/v2/{endpoint}/run") {
      found = true;
      EXPECT_EQ(r.at("access").as_string(), "invoke");
      EXPECT_FALSE(r.at("summary").as_string().empty());
    }
  }
  EXPECT_TRUE(found);
}

// docs/api.md lists every route with its access, in tables of "| method | path | access |
// notes |" whose method cell may name several methods ("GET, POST"). The route table and the
// page must say the same.
TEST_F(ApiTest, DocsListExactlyTheRouteTable) {
  std::ifstream f(std::string(GANTRY_SOURCE_DIR) + "/docs/api.md");
  ASSERT_TRUE(f) << "docs/api.md not found";
  std::set<std::tuple<std::string, std::string, std::string>> documented, routed;
  std::regex row(R"(^\| ([A-Z, ]+) \| `([^`]+)` \| ([a-z]+) \|)");
  std::string line;
  while (std::getline(f, line)) {
    std::smatch m;
    if (!std::regex_search(line, m, row)) continue;
    std::stringstream methods(m[1].str());
    std::string method;
    while (std::getline(methods, method, ',')) {
      method.erase(0, method.find_first_not_of(' '));
      documented.insert({method, m[2].str(), m[3].str()});
    }
  }
  for (const Route& r : api_.table().routes())
    routed.insert({r.method, r.path, AccessName(r.access)});
  for (const auto& [m, p, a] : routed) {
    EXPECT_TRUE(documented.count({m, p, a}))
        << "not in docs/api.md: | " << m << " | `" << p << "` | " << a << " |";
  }
  for (const auto& [m, p, a] : documented) {
    EXPECT_TRUE(routed.count({m, p, a}))
        << "docs/api.md has a route the table lacks: " << m << " " << p << " (" << a << ")";
  }
}

TEST_F(ApiTest, NodeProtocolRoundTripsThroughTheRoutes) {
  auto r = Do("POST", "/v1/nodes/n1",
              R"({"name":"n1","cpuCores":4,"memoryMb":8192,"gpus":[{"index":0,"type":"H100"}],
                  "runtime":{"ociRuntime":"crun","ociNotes":[],"limits":"cgroup v2"}})");
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(J(r).at("runtime").at("ociRuntime").as_string(), "crun");
  EXPECT_EQ(Do("POST", "/v1/nodes/bad%20id", "{}").status, 400);
  EXPECT_EQ(Do("POST", "/v1/nodes/n1/status", "[]").status, 400);
  ASSERT_EQ(Do("POST", "/v1/nodes/n1/status",
               R"({"workers":[],"bundles":[],"templates":[{"endpointId":"e","version":1,
                   "state":"ready","snapshot":true}]})")
                .status,
            200);
  auto node = J(Do("GET", "/v1/nodes/n1"));
  EXPECT_EQ(node.at("templates").as_array().size(), 1u);
  EXPECT_EQ(node.at("gpus").as_array()[0].at("type").as_string(), "H100");
  EXPECT_EQ(J(Do("GET", "/v1/nodes/n1/assignment?version=-1")).at("version").as_int64(), 1);
  EXPECT_EQ(Do("GET", "/v1/nodes/zz/assignment").status, 404);
  EXPECT_EQ(Do("GET", "/v1/nodes/zz").status, 404);
}

}  // namespace
}  // namespace gantry::api
