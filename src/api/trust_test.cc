// The API's trust boundaries: key scopes over the whole route table, keys, webhook targets and
// the body limit of requests without a valid credential.
#include <gtest/gtest.h>

#include <map>
#include <set>
#include <string>

#include "api/api_test_fixture.h"

namespace gantry::api {
namespace {

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

// A node's assignment carries the secrets of the workers placed on it, and only its own key
// (or an admin key) reads it: node n1's key sees n1's worker secret, never n2's nor n2's
// registry password.
TEST_F(ApiTest, ANodeKeyReadsOnlyItsOwnAssignmentAndItsOwnWorkersSecrets) {
  for (const char* node : {"n1", "n2"}) {
    const std::string gpu = std::string(node) == "n1" ? "H100" : "A100-80GB";
    ASSERT_EQ(Do("POST", std::string("/v1/nodes/") + node,
                 R"({"name":")" + std::string(node) +
                     R"(","cpuCores":4,"memoryMb":8192,"gpus":[{"index":0,"type":")" + gpu +
                     R"("}],"runtime":{"ociRuntime":"runc","ociNotes":[],"limits":"none"}})")
                  .status,
              200);
  }
  ASSERT_EQ(
      Do("POST", "/v1/endpoints", R"({"id":"a","gpuTypeIds":["H100"],"worker":{"command":["x"]}})")
          .status,
      201);
  ASSERT_EQ(Do("POST", "/v1/endpoints",
               R"({"id":"b","gpuTypeIds":["A100-80GB"],"image":"r.example.com/b:1",
                   "registryAuth":{"username":"u","password":"b-registry-password"}})")
                .status,
            201);
  ASSERT_EQ(Do("POST", "/v2/a/run", R"({"input":1})").status, 200);
  ASSERT_EQ(Do("POST", "/v2/b/run", R"({"input":1})").status, 200);
  const std::string n1 = "Bearer " + keys_.AddEphemeral("n1", Grant{Scope::kNode, {}, "n1"});
  auto mine = Do("GET", "/v1/nodes/n1/assignment?version=-1", "", n1);
  ASSERT_EQ(mine.status, 200) << mine.body;
  auto theirs = Do("GET", "/v1/nodes/n2/assignment?version=-1");  // the admin key may
  ASSERT_EQ(theirs.status, 200) << theirs.body;
  const json::value a = J(mine), b = J(theirs);
  ASSERT_EQ(a.at("workers").as_array().size(), 1u) << mine.body;
  ASSERT_EQ(b.at("workers").as_array().size(), 1u) << theirs.body;
  const std::string a_secret(
      a.at("workers").as_array()[0].at("env").at("RUNPOD_AI_API_KEY").as_string());
  const std::string b_secret(
      b.at("workers").as_array()[0].at("env").at("RUNPOD_AI_API_KEY").as_string());
  EXPECT_NE(mine.body.find(a_secret), std::string::npos);
  EXPECT_EQ(mine.body.find(b_secret), std::string::npos);
  EXPECT_EQ(mine.body.find("b-registry-password"), std::string::npos);
  EXPECT_NE(theirs.body.find("b-registry-password"), std::string::npos);
  EXPECT_EQ(Do("GET", "/v1/nodes/n2/assignment?version=-1", "", n1).status, 403);
}

// RunPod's per-endpoint limits (purge-queue: 2 in 10 s), answered 429 with Retry-After; each
// endpoint has its own, and tokens come back with time.
TEST_F(ApiTest, AnEndpointPastItsRateLimitGets429WithRetryAfter) {
  ASSERT_EQ(Do("POST", "/v1/endpoints", R"({"id":"rl"})").status, 201);
  ASSERT_EQ(Do("POST", "/v1/endpoints", R"({"id":"rl2"})").status, 201);
  EXPECT_EQ(Do("POST", "/v2/rl/purge-queue").status, 200);
  EXPECT_EQ(Do("POST", "/v2/rl/purge-queue").status, 200);
  http::Response r = Do("POST", "/v2/rl/purge-queue");
  EXPECT_EQ(r.status, 429) << r.body;
  EXPECT_NE(ErrorMessage(r).find("endpoint rl took more than 2 POST /v2/{endpoint}/purge-queue "
                                 "requests in 10 s"),
            std::string::npos)
      << r.body;
  std::string retry_after;
  for (const auto& h : r.headers) {
    if (h.name == "Retry-After") retry_after = h.value;
  }
  EXPECT_EQ(retry_after, "5");                               // one token comes back every 5 s
  EXPECT_EQ(Do("POST", "/v2/rl2/purge-queue").status, 200);  // another endpoint's own limit
  EXPECT_EQ(Do("GET", "/v2/rl/health").status, 200);         // another route: not limited
  Advance(5'000);
  EXPECT_EQ(Do("POST", "/v2/rl/purge-queue").status, 200);
  EXPECT_EQ(Do("POST", "/v2/rl/purge-queue").status, 429);
}

TEST_F(ApiTest, AKeyPastItsRateLimitGets429AndAnotherKeyDoesNot) {
  const std::string other = keys_.Create("other", Grant{Scope::kRead, {}, {}}, {})->second;
  for (int i = 0; i < kKeyRule.requests; ++i) {
    ASSERT_EQ(Do("GET", "/v1/endpoints").status, 200) << i;
  }
  http::Response r = Do("GET", "/v1/endpoints");
  EXPECT_EQ(r.status, 429);
  EXPECT_NE(ErrorMessage(r).find("key admin made more than 10000 requests in 10 s"),
            std::string::npos)
      << r.body;
  EXPECT_EQ(Do("GET", "/v1/endpoints", "", "Bearer " + other).status, 200);
  Advance(1'000);  // a tenth of the window: a thousand more
  EXPECT_EQ(Do("GET", "/v1/endpoints").status, 200);
}

// RunPod's concurrent limits: /runsync requests held open (no worker) count until answered.
TEST_F(ApiTest, AnEndpointAnsweringItsMostRequestsAtOnceGets429) {
  ApiOptions o = Options();
  o.rate_limit_scale = 0.01;  // /runsync: 4 at once, 20 in 10 s
  Api small(Services{&clock_, &jobs_, &endpoints_, &workers_, &scheduler_, &logs_, &metering_,
                     &worker_env_, &blobs_, &keys_, o});
  ASSERT_EQ(Do("POST", "/v1/endpoints", R"({"id":"held"})").status, 201);
  auto start = [&](const std::string& target) {
    http::Request req;
    req.method = "POST";
    req.target = target;
    req.body = R"({"input":{}})";
    req.headers.push_back({"Authorization", "Bearer " + key_});
    auto resp = std::make_shared<RecordingResponder>();
    small.Handle(std::move(req), resp);
    store_.FlushDeferred();
    return resp;
  };
  std::vector<std::shared_ptr<RecordingResponder>> held;
  for (int i = 0; i < 4; ++i) held.push_back(start("/v2/held/runsync?wait=1000"));
  for (const auto& h : held) EXPECT_EQ(h->sends, 0);  // waiting for a worker
  auto fifth = start("/v2/held/runsync?wait=1000");
  ASSERT_EQ(fifth->sends, 1);
  EXPECT_EQ(fifth->last.status, 429);
  EXPECT_NE(fifth->last.body.find("is answering 4 POST /v2/{endpoint}/runsync requests at once"),
            std::string::npos)
      << fifth->last.body;
  EXPECT_EQ(start("/v2/held/run")->last.status, 200);  // another route counts apart
  Advance(1'000);  // the held ones are answered (their wait passed): room again
  store_.FlushDeferred();
  for (const auto& h : held) EXPECT_EQ(h->sends, 1);
  EXPECT_EQ(start("/v2/held/runsync?wait=1000")->sends, 0);
}

TEST(RateLimiterTest, ScaleMultipliesEveryLimitAndZeroTurnsThemOff) {
  FakeClock c;
  RateLimiter two(&c, 0.01);
  EXPECT_TRUE(two.Enter("k", "b", 200));
  EXPECT_TRUE(two.Enter("k", "b", 200));
  EXPECT_FALSE(two.Enter("k", "b", 200));  // 200 x 0.01
  two.Leave("k", "b");
  EXPECT_TRUE(two.Enter("k", "b", 200));
  FakeClock clock;
  RateLimiter doubled(&clock, 2);
  for (int i = 0; i < 4; ++i) EXPECT_EQ(doubled.Admit("k", "b", {2, 10'000}), 0) << i;
  EXPECT_EQ(doubled.Admit("k", "b", {2, 10'000}), 2'500);
  EXPECT_EQ(doubled.Admit("k", "c", {2, 10'000}), 0);  // a bucket of its own
  RateLimiter off(&clock, 0);
  EXPECT_FALSE(off.enabled());
  for (int i = 0; i < 100; ++i) EXPECT_EQ(off.Admit("k", "b", {2, 10'000}), 0);
  EXPECT_EQ(EndpointRateRule("/v2/{endpoint}/run")->requests, 1'000);
  EXPECT_EQ(EndpointRateRule("/v2/{endpoint}/runsync")->requests, 2'000);
  EXPECT_FALSE(EndpointRateRule("/v2/{endpoint}/health"));
  EXPECT_FALSE(EndpointRateRule("/v1/endpoints"));
}

// A management write whose commit fails is answered 503 and changes nothing: a new endpoint,
// an update, a deletion, a new key and a revocation are each taken back (as a restart would
// find them), so a client that retries finds things as it left them.
TEST_F(ApiTest, AManagementWriteWhoseCommitFailsChangesNothing) {
  ASSERT_EQ(Do("POST", "/v1/endpoints", R"({"id":"ep","workersMax":2})").status, 201);
  auto failing = [&](const std::string& method, const std::string& target,
                     const std::string& body = "") {
    http::Request req;
    req.method = method;
    req.target = target;
    req.body = body;
    req.headers.push_back({"Authorization", "Bearer " + key_});
    auto resp = std::make_shared<RecordingResponder>();
    api_.Handle(std::move(req), resp);
    store_.FailDeferred(Unavailable("disk full"));
    EXPECT_EQ(resp->sends, 1) << method << " " << target;
    return resp->last;
  };
  EXPECT_EQ(failing("POST", "/v1/endpoints", R"({"id":"new"})").status, 503);
  EXPECT_EQ(Do("GET", "/v1/endpoints/new").status, 404);
  EXPECT_FALSE(jobs_.HasEndpoint("new"));
  EXPECT_EQ(failing("PATCH", "/v1/endpoints/ep", R"({"workersMax":9})").status, 503);
  EXPECT_EQ(endpoints_.Get("ep")->workers_max, 2);
  EXPECT_EQ(endpoints_.Get("ep")->version, 1);
  EXPECT_EQ(failing("DELETE", "/v1/endpoints/ep").status, 503);
  ASSERT_NE(endpoints_.Get("ep"), nullptr);
  EXPECT_TRUE(jobs_.HasEndpoint("ep"));
  EXPECT_EQ(Do("POST", "/v2/ep/run", R"({"input":1})").status, 200);  // it takes jobs again

  EXPECT_EQ(failing("POST", "/v1/keys", R"({"name":"lost","scope":"read"})").status, 503);
  for (const ApiKey* k : keys_.List()) EXPECT_NE(k->name, "lost");
  auto other = J(Do("POST", "/v1/keys", R"({"name":"other","scope":"read"})"));
  const std::string id(other.at("id").as_string()), secret(other.at("key").as_string());
  EXPECT_EQ(failing("DELETE", "/v1/keys/" + id).status, 503);
  EXPECT_EQ(Do("GET", "/v1/endpoints", "", "Bearer " + secret).status, 200);  // still a key
  EXPECT_EQ(Do("DELETE", "/v1/keys/" + id).status, 200);  // and revoked when the write lands
  EXPECT_EQ(Do("GET", "/v1/endpoints", "", "Bearer " + secret).status, 401);
}

}  // namespace
}  // namespace gantry::api
