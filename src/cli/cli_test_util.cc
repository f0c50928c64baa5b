#include "cli/cli_test_util.h"

#include <algorithm>
#include <cstdlib>
#include <sstream>

#include "cli/cli.h"

namespace gantry::cli {

FakeServer::FakeServer() {
  server_ = std::make_unique<http::HttpServer>(
      &loop_, http::ServerOptions{},
      [this](http::Request&& r, std::shared_ptr<http::Responder> w) { Handle(std::move(r), w); });
  Status st = server_->Start();
  EXPECT_TRUE(st.ok()) << st.ToString();
  thread_ = std::thread([this] { loop_.Run(); });
}

FakeServer::~FakeServer() {
  loop_.Post([this] { server_->Stop(); });
  loop_.Stop();
  thread_.join();
}

void FakeServer::On(const std::string& method, const std::string& path, int status,
                    std::string body) {
  std::lock_guard<std::mutex> lock(mu_);
  routes_[{method, path}] = Answers{};
  http::Response r;
  r.status = status;
  r.body = std::move(body);
  routes_[{method, path}].responses.push_back(std::move(r));
}

void FakeServer::Then(const std::string& method, const std::string& path, int status,
                      std::string body) {
  std::lock_guard<std::mutex> lock(mu_);
  http::Response r;
  r.status = status;
  r.body = std::move(body);
  routes_[{method, path}].responses.push_back(std::move(r));
}

std::vector<http::Request> FakeServer::Requests() const {
  std::lock_guard<std::mutex> lock(mu_);
  return requests_;
}

std::string FakeServer::url() const {
  return "http://127.0.0.1:" + std::to_string(server_->port());
}

void FakeServer::Handle(http::Request&& request, std::shared_ptr<http::Responder> responder) {
  http::Response response;
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = routes_.find({request.method, std::string(request.path())});
    if (it != routes_.end() && !it->second.responses.empty()) {
      Answers& a = it->second;
      response = a.responses[std::min(a.next, a.responses.size() - 1)];
      ++a.next;
    } else {
      response.status = 404;
      response.body = R"({"error": {"code": "NOT_FOUND", "message": "no route"}})";
    }
    requests_.push_back(std::move(request));
  }
  responder->Send(std::move(response));
}

void CliTest::SetUp() {
  for (const char* v : {"GANTRY_URL", "GANTRY_API_KEY", "GANTRY_DATA_DIR"}) unsetenv(v);
  setenv("GANTRY_CONFIG", "/nonexistent/gantry-config.json", 1);
}

int CliTest::Run(std::vector<std::string> args) {
  args.insert(args.begin(), {"--url", server_.url(), "--api-key", "k-test"});
  return RunBare(std::move(args));
}

int CliTest::RunBare(std::vector<std::string> args) {
  args.insert(args.begin(), "gantry");
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  std::ostringstream out, err;
  int rc = Main(static_cast<int>(args.size()), argv.data(), out, err, clock_, [this](int64_t ms) {
    slept_ms_ += ms;
    clock_.Advance(ms);
  });
  out_ = out.str();
  err_ = err.str();
  return rc;
}

http::Request CliTest::OnlyRequest() {
  auto requests = server_.Requests();
  EXPECT_EQ(requests.size(), 1u);
  return requests.empty() ? http::Request{} : requests.front();
}

}  // namespace gantry::cli
