#include "api/api.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <regex>
#include <set>
#include <sstream>
#include <tuple>

namespace gantry::api {
namespace {

// Records what a handler answered.
class RecordingResponder final : public http::Responder {
 public:
  void Send(http::Response response, std::function<void(bool)> on_done) override {
    ++sends;
    last = std::move(response);
    if (on_done) on_done(true);
  }
  int sends = 0;
  http::Response last;
};

// The server's modules on an in-memory store whose writes complete only when flushed, a fake
// clock, and the Api over them.
class ApiTest : public ::testing::Test {
 protected:
  ApiTest()
      : blob_dir_(MakeTempDir()),
        jobs_(&clock_, &store_, {}, [](auto&&...) {}),
        endpoints_(&clock_, &store_, &jobs_),
        workers_(&clock_, &store_, &jobs_, scheduling::WorkerOptions{}),
        metering_(&clock_, &store_, scheduling::DefaultPrices(), &jobs_, &workers_),
        logs_(&store_),
        scheduler_(&clock_, &jobs_, &endpoints_, &workers_, scheduling::SchedulerOptions{},
                   &worker_env_, &metering_),
        keys_(&clock_, &store_),
        blobs_(blob_dir_ + "/blobs"),
        api_(Services{&clock_, &jobs_, &endpoints_, &workers_, &scheduler_, &logs_, &metering_,
                      &worker_env_, &blobs_, &keys_, Options()}) {
    EXPECT_TRUE(blobs_.Init().ok());
    key_ = keys_.Create("admin", Grant{Scope::kAdmin, {}, {}}, {})->second;
    store_.set_deferred(true);
  }
  ~ApiTest() override { std::filesystem::remove_all(blob_dir_); }

  static std::string MakeTempDir() {
    char tmpl[] = "/tmp/gantry-api-test-XXXXXX";
    return mkdtemp(tmpl);
  }
  static ApiOptions Options() {
    ApiOptions o;
    o.run_body_limit = 1000;
    o.take_wait_ms = 0;  // a take with nothing queued answers 204 at once
    o.webhook_policy = std::make_shared<const http::AddressPolicy>();
    return o;
  }

  // Sends a request with `auth` as its Authorization header ("" for none); flushes the store so
  // that durable replies go out. The responder: a long-poll may answer later.
  std::shared_ptr<RecordingResponder> Start(const std::string& method, const std::string& target,
                                            const std::string& body = "",
                                            std::optional<std::string> auth = std::nullopt) {
    http::Request req;
    req.method = method;
    req.target = target;
    req.body = body;
    std::string a = auth.value_or("Bearer " + key_);
    if (!a.empty()) req.headers.push_back({"Authorization", a});
    auto resp = std::make_shared<RecordingResponder>();
    api_.Handle(std::move(req), resp);
    store_.FlushDeferred();
    return resp;
  }
  // Start() of a request that is answered at once.
  http::Response Do(const std::string& method, const std::string& target,
                    const std::string& body = "", std::optional<std::string> auth = std::nullopt) {
    auto resp = Start(method, target, body, auth);
    EXPECT_EQ(resp->sends, 1) << method << " " << target;
    return resp->last;
  }
  // Advances the clock and fires the deadlines due.
  void Advance(int64_t ms) {
    clock_.Advance(ms);
    jobs_.Tick();
  }
  // A worker registered by hand: its id and secret.
  std::pair<std::string, std::string> RegisterWorker(const std::string& ep) {
    auto reg = J(Do("POST", "/v1/endpoints/" + ep + "/workers"));
    return {std::string(reg.at("workerId").as_string()),
            std::string(reg.at("env").at("RUNPOD_AI_API_KEY").as_string())};
  }
  json::value J(const http::Response& r) {
    auto v = ParseJson(r.body);
    EXPECT_TRUE(v.ok()) << r.body;
    return v.ok() ? *v : json::value();
  }
  std::string ErrorCode(const http::Response& r) {
    return std::string(J(r).at("error").at("code").as_string());
  }
  std::string ErrorMessage(const http::Response& r) {
    return std::string(J(r).at("error").at("message").as_string());
  }

  FakeClock clock_;
  store::MemoryStore store_;
  std::string blob_dir_;
  jobs::JobManager jobs_;
  scheduling::EndpointRegistry endpoints_;
  scheduling::WorkerRegistry workers_;
  scheduling::Metering metering_;
  scheduling::LogStore logs_;
  scheduling::WorkerEnvFactory worker_env_{"http://gantry.test", 10'000};
  scheduling::Scheduler scheduler_;
  KeyRing keys_;
  BlobStore blobs_;
  Api api_;
  std::string key_;
};

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

// --- Scopes ---------------------------------------------------------------------------------

// Every key route, taken from the table itself, called with a key of every scope: a scope the
// route's access admits gets past the check (whatever the handler then answers), any other
// gets 403. The matrix is written out here, apart from the code that enforces it.
TEST_F(ApiTest, EveryRouteAdmitsExactlyTheScopesItsAccessAllows) {
  const std::map<std::string, Grant> grants = {{"admin", {Scope::kAdmin, {}, {}}},
                                               {"deploy", {Scope::kDeploy, {}, {}}},
                                               {"invoke", {Scope::kInvoke, {}, {}}},
                                               {"invoke-ep", {Scope::kInvoke, {"ep"}, {}}},
                                               {"invoke-other", {Scope::kInvoke, {"other"}, {}}},
                                               {"read", {Scope::kRead, {}, {}}},
                                               {"node-n1", {Scope::kNode, {}, "n1"}},
                                               {"node-n2", {Scope::kNode, {}, "n2"}}};
  // Access -> the grants it admits, for a route naming endpoint "ep" and node "n1".
  const std::map<std::string, std::set<std::string>> admits = {
      {"admin", {"admin"}},
      {"deploy", {"admin", "deploy"}},
      {"read", {"admin", "deploy", "read"}},
      {"invoke", {"admin", "deploy", "invoke", "invoke-ep"}},
      {"node", {"admin", "node-n1"}}};
  std::map<std::string, std::string> secrets;
  for (const auto& [name, g] : grants) secrets[name] = keys_.AddEphemeral(name, g);
  const std::map<std::string, std::string> values = {
      {"endpoint", "ep"},     {"node", "n1"},  {"job", "no-such-job"},
      {"key", "no-such-key"}, {"worker", "w"}, {"digest", std::string(64, 'a')}};
  int checked = 0;
  for (const Route& route : api_.table().routes()) {
    if (route.access == Access::kPublic || route.access == Access::kWorker) continue;
    std::string path = route.path;
    for (size_t open; (open = path.find('{')) != std::string::npos;) {
      size_t close = path.find('}', open);
      path.replace(open, close - open + 1, values.at(path.substr(open + 1, close - open - 1)));
    }
    std::set<std::string> admitted = admits.at(AccessName(route.access));
    // A node key acts for its node: on a route that names no node (blobs), for any node.
    if (admitted.count("node-n1") && route.path.find("{node}") == std::string::npos) {
      admitted.insert("node-n2");
    }
    for (const auto& [name, g] : grants) {
      auto resp = Start(route.method, path, "", "Bearer " + secrets[name]);
      const int status = resp->sends ? resp->last.status : 0;  // 0: a long-poll waiting
      if (admitted.count(name)) {
        EXPECT_NE(status, 401) << name << " " << route.method << " " << route.path;
        EXPECT_NE(status, 403) << name << " " << route.method << " " << route.path << "\n"
                               << resp->last.body;
      } else {
        EXPECT_EQ(status, 403) << name << " " << route.method << " " << route.path;
      }
      ++checked;
    }
  }
  EXPECT_GT(checked, 8 * 30);  // every key route was tried
}

TEST_F(ApiTest, AKeyIsCreatedWithAScopeAndListedWithIt) {
  auto r = Do("POST", "/v1/keys", R"({"name":"ci","scope":"invoke","endpoints":["echo"]})");
  ASSERT_EQ(r.status, 201) << r.body;
  EXPECT_EQ(J(r).at("scope").as_string(), "invoke");
  const std::string ci = std::string(J(r).at("key").as_string());
  r = Do("POST", "/v1/keys", R"({"name":"plain"})");
  EXPECT_EQ(J(r).at("scope").as_string(), "invoke");  // the default: calling endpoints only
  EXPECT_EQ(Do("POST", "/v1/keys", R"({"scope":"root"})").status, 400);
  EXPECT_EQ(Do("POST", "/v1/keys", R"({"scope":"node"})").status, 400);  // which node?
  EXPECT_EQ(Do("POST", "/v1/keys", R"({"scope":"read","endpoints":["x"]})").status, 400);
  EXPECT_EQ(Do("POST", "/v1/keys", R"({"scpoe":"read"})").status, 400);
  const json::value listed = J(Do("GET", "/v1/keys"));
  bool found = false;
  for (const auto& k : listed.at("keys").as_array()) {
    if (k.at("name") != "ci") continue;
    found = true;
    EXPECT_EQ(ToJson(k.at("endpoints")), R"(["echo"])");
    EXPECT_EQ(k.as_object().count("key"), 0u);
  }
  EXPECT_TRUE(found);
  // The invoke key calls its endpoint, not another, and cannot touch keys.
  ASSERT_EQ(Do("POST", "/v1/endpoints", R"({"id":"echo"})").status, 201);
  ASSERT_EQ(Do("POST", "/v1/endpoints", R"({"id":"other"})").status, 201);
  EXPECT_EQ(Do("POST", "/v2/echo/run", R"({"input":1})", "Bearer " + ci).status, 200);
  r = Do("POST", "/v2/other/run", R"({"input":1})", "Bearer " + ci);
  EXPECT_EQ(r.status, 403);
  EXPECT_NE(r.body.find("may not call endpoint other"), std::string::npos) << r.body;
  r = Do("DELETE", "/v1/keys/" + keys_.List().front()->id, "", "Bearer " + ci);
  EXPECT_EQ(r.status, 403);
  EXPECT_NE(r.body.find("scope is invoke; this route needs admin"), std::string::npos) << r.body;
}

TEST_F(ApiTest, TheLastAdminKeyCannotBeRevoked) {
  std::string admin_id;
  for (const ApiKey* k : keys_.List()) admin_id = k->id;
  auto r = Do("POST", "/v1/keys", R"({"name":"ci","scope":"deploy"})");
  ASSERT_EQ(r.status, 201);
  r = Do("DELETE", "/v1/keys/" + admin_id);
  EXPECT_EQ(ErrorCode(r), "failed_precondition") << r.body;
  r = Do("POST", "/v1/keys", R"({"name":"second admin","scope":"admin"})");
  const std::string second(J(r).at("key").as_string());
  EXPECT_EQ(Do("DELETE", "/v1/keys/" + admin_id, "", "Bearer " + second).status, 200);
}

TEST_F(ApiTest, ScopesSurviveARestartAndOldKeysAreAdminKeys) {
  ASSERT_EQ(Do("POST", "/v1/keys", R"({"name":"n","scope":"node","node":"gpu1"})").status, 201);
  store_.Write({store::Mutation::PutObject(
                   {"key", "key-old", R"({"name":"old","hash":"h","prefix":"gk_old"})"})},
               {});
  store_.FlushDeferred();
  KeyRing reloaded(&clock_, &store_);
  ASSERT_TRUE(reloaded.Load().ok());
  std::map<std::string, std::string> scopes;
  for (const ApiKey* k : reloaded.List()) {
    scopes[k->name] = std::string(ScopeName(k->grant.scope)) + ":" + k->grant.node_id;
  }
  EXPECT_EQ(scopes["n"], "node:gpu1");
  EXPECT_EQ(scopes["old"], "admin:");  // stored before scopes: an admin key, as it was
  EXPECT_EQ(scopes["admin"], "admin:");
}

TEST_F(ApiTest, AWebhookToAnAddressOffThePublicInternetIsRefused) {
  ASSERT_EQ(Do("POST", "/v1/endpoints", R"({"id":"ep"})").status, 201);
  for (const char* url : {"http://127.0.0.1:8000/admin", "http://169.254.169.254/latest/meta-data",
                          "http://10.1.2.3/", "http://[::1]:9000/"}) {
    auto r = Do("POST", "/v2/ep/run", std::string(R"({"input":1,"webhook":")") + url + R"("})");
    EXPECT_EQ(r.status, 400) << url;
    EXPECT_NE(ErrorMessage(r).find("public addresses only"), std::string::npos) << r.body;
  }
  EXPECT_EQ(J(Do("GET", "/v2/ep/health")).at("jobs").at("inQueue").as_int64(), 0);
  // A public address, or a name (checked when it is resolved, at delivery): taken.
  EXPECT_EQ(Do("POST", "/v2/ep/run", R"({"input":1,"webhook":"http://93.184.215.14/h"})").status,
            200);
  EXPECT_EQ(
      Do("POST", "/v2/ep/run", R"({"input":1,"webhook":"http://hooks.example.com/h"})").status,
      200);
}

TEST_F(ApiTest, OnlyAValidCredentialForTheRouteLiftsTheSmallBodyLimit) {
  constexpr size_t kSmall = Api::kUnauthenticatedBodyLimit;
  ASSERT_EQ(Do("POST", "/v1/endpoints", R"({"id":"ep"})").status, 201);
  auto [wid, secret] = RegisterWorker("ep");
  EXPECT_EQ(api_.BodyLimitFor("POST", "/v2/ep/run", ""), kSmall);
  EXPECT_EQ(api_.BodyLimitFor("POST", "/v2/ep/run", "Bearer nope"), kSmall);
  EXPECT_EQ(api_.BodyLimitFor("POST", "/v2/ep/run?wait=5", "Bearer " + key_), SIZE_MAX);
  EXPECT_EQ(api_.BodyLimitFor("POST", "/v2/ep/job-done/" + wid + "/j", secret), SIZE_MAX);
  EXPECT_EQ(api_.BodyLimitFor("POST", "/v2/ep/job-done/" + wid + "/j", "Bearer " + key_), kSmall);
  EXPECT_EQ(api_.BodyLimitFor("POST", "/v2/ep/job-done/w-other/j", secret), kSmall);
  EXPECT_EQ(api_.BodyLimitFor("POST", "/no/such/route", "Bearer " + key_), kSmall);
  EXPECT_EQ(api_.BodyLimitFor("GET", "/healthz", "Bearer " + key_), kSmall);
}

}  // namespace gantry::api
