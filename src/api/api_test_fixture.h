#pragma once
// The fixture of the api tests: the real modules on a memory store and a fake clock, and
// the route table driven through Api::Handle with recorded responses.

#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <utility>

#include "api/api.h"

namespace gantry::api {

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

}  // namespace gantry::api
