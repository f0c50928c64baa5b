#pragma once
// Test helpers for the `gantry` CLI: a fake server (a real HttpServer on port 0 answering canned
// JSON and recording the requests) and a fixture that runs cli::Main against it.

#include <gtest/gtest.h>

#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "common/env.h"
#include "http/http.h"

namespace gantry::cli {

// Listens on 127.0.0.1, port 0, with its loop on a thread of its own. Thread-safe.
class FakeServer {
 public:
  FakeServer();
  ~FakeServer();

  // Answers `method` on `path` (without the query) with `status` and `body` from now on.
  // Unrouted requests get 404 with an error body.
  void On(const std::string& method, const std::string& path, int status, std::string body);
  // Adds an answer after those of `method` on `path`: each request gets the next answer, and
  // the last one is repeated (On, then Then, Then: a sequence, e.g. stream chunks then a
  // terminal status).
  void Then(const std::string& method, const std::string& path, int status, std::string body);
  // Every request received, in order.
  std::vector<http::Request> Requests() const;
  std::string url() const;

 private:
  void Handle(http::Request&& request, std::shared_ptr<http::Responder> responder);

  http::EventLoop loop_;
  std::unique_ptr<http::HttpServer> server_;
  std::thread thread_;
  mutable std::mutex mu_;  // guards routes_, requests_
  struct Answers {
    std::vector<http::Response> responses;
    size_t next = 0;  // the index of the next request's answer, the last one repeated
  };
  std::map<std::pair<std::string, std::string>, Answers> routes_;
  std::vector<http::Request> requests_;
};

// Runs `gantry --url <fake server> --api-key k-test ARGS...` in-process; out_ and err_ hold what
// it printed. The clock stands at kNowMs and moves only when the CLI sleeps (slept_ms_ adds up
// how long); GANTRY_* variables are cleared.
class CliTest : public ::testing::Test {
 protected:
  static constexpr int64_t kNowMs = 1'700'000'000'000;

  void SetUp() override;
  int Run(std::vector<std::string> args);
  // Without --url and --api-key.
  int RunBare(std::vector<std::string> args);
  // The only request the server got; fails the test when there were more or none.
  http::Request OnlyRequest();

  FakeServer server_;
  FakeClock clock_{kNowMs};
  int64_t slept_ms_ = 0;
  std::string out_, err_;
};

}  // namespace gantry::cli
