// HTTP clients on Boost.Beast: a blocking keep-alive client and a one-shot async fetch.
#include <strings.h>

#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>

#include "http/http.h"
#include "http/loop_impl.h"

namespace gantry::http {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace bhttp = boost::beast::http;
using tcp = asio::ip::tcp;

namespace {

bhttp::request<bhttp::string_body> MakeRequest(const std::string& method, const std::string& host,
                                               const std::string& target, std::string body,
                                               const std::vector<Header>& headers) {
  bhttp::request<bhttp::string_body> req;
  req.method_string(method);
  req.target(target);
  req.version(11);
  req.set(bhttp::field::host, host);
  req.set(bhttp::field::user_agent, "gantry");
  bool has_type = false;
  for (const auto& h : headers) {
    req.set(h.name, h.value);
    if (strcasecmp(h.name.c_str(), "content-type") == 0) has_type = true;
  }
  if (!has_type && !body.empty()) req.set(bhttp::field::content_type, "application/json");
  req.body() = std::move(body);
  req.keep_alive(true);
  req.prepare_payload();
  return req;
}

ClientResponse ToClientResponse(bhttp::response<bhttp::string_body>& res) {
  ClientResponse out;
  out.status = static_cast<int>(res.result_int());
  out.body = std::move(res.body());
  for (const auto& f : res) {
    out.headers.push_back({std::string(f.name_string()), std::string(f.value())});
  }
  return out;
}

}  // namespace

struct HttpClient::Impl {
  Impl(std::string h, uint16_t p) : host(std::move(h)), port(p), stream(io) {}

  // Runs one exchange; `fresh` means the connection was just opened.
  beast::error_code Exchange(bhttp::request<bhttp::string_body>& req,
                             bhttp::response<bhttp::string_body>& res, int64_t timeout_ms) {
    beast::error_code result = asio::error::timed_out;
    buffer.clear();
    stream.expires_after(std::chrono::milliseconds(timeout_ms));
    bhttp::async_write(stream, req, [&](beast::error_code ec, size_t) {
      if (ec) {
        result = ec;
        return;
      }
      bhttp::async_read(stream, buffer, res, [&](beast::error_code ec2, size_t) { result = ec2; });
    });
    io.restart();
    io.run();
    return result;
  }

  beast::error_code Connect(int64_t timeout_ms) {
    beast::error_code result = asio::error::timed_out;
    tcp::resolver resolver(io);
    beast::error_code ec;
    auto results = resolver.resolve(host, std::to_string(port), ec);
    if (ec) return ec;
    stream.expires_after(std::chrono::milliseconds(timeout_ms));
    stream.async_connect(results,
                         [&](beast::error_code ec2, const tcp::endpoint&) { result = ec2; });
    io.restart();
    io.run();
    if (!result) stream.socket().set_option(tcp::no_delay(true), ec);
    connected = !result;
    return result;
  }

  std::string host;
  uint16_t port;
  asio::io_context io;
  beast::tcp_stream stream;
  beast::flat_buffer buffer;
  bool connected = false;
};

HttpClient::HttpClient(std::string host, uint16_t port)
    : impl_(std::make_unique<Impl>(std::move(host), port)) {}
HttpClient::~HttpClient() = default;

Result<ClientResponse> HttpClient::Do(const std::string& method, const std::string& target,
                                      const std::string& body, const std::vector<Header>& headers,
                                      int64_t timeout_ms) {
  std::string host_header = impl_->host + ":" + std::to_string(impl_->port);
  for (int attempt = 0; attempt < 2; ++attempt) {
    bool reused = impl_->connected;
    if (!impl_->connected) {
      beast::error_code ec = impl_->Connect(timeout_ms);
      if (ec) {
        return Unavailable("cannot connect to " + host_header + ": " + ec.message());
      }
    }
    auto req = MakeRequest(method, host_header, target, body, headers);
    bhttp::response<bhttp::string_body> res;
    res.body().reserve(256);
    beast::error_code ec = impl_->Exchange(req, res, timeout_ms);
    if (ec) {
      beast::error_code ignored;
      impl_->stream.socket().close(ignored);
      impl_->connected = false;
      // A kept-alive connection the server closed meanwhile: retry once on a fresh one.
      if (reused && ec != beast::error::timeout) continue;
      if (ec == beast::error::timeout) {
        return Status(Code::kDeadlineExceeded, "request to " + host_header + " timed out");
      }
      return Unavailable("request to " + host_header + " failed: " + ec.message());
    }
    if (!res.keep_alive()) {
      beast::error_code ignored;
      impl_->stream.socket().close(ignored);
      impl_->connected = false;
    }
    return ToClientResponse(res);
  }
  return Unavailable("request to " + host_header + " failed");
}

namespace {

struct FetchOp : std::enable_shared_from_this<FetchOp> {
  FetchOp(asio::io_context& io) : resolver(io), stream(io) {}
  tcp::resolver resolver;
  beast::tcp_stream stream;
  beast::flat_buffer buffer;
  bhttp::request<bhttp::string_body> req;
  bhttp::response<bhttp::string_body> res;
  Url url;
  int64_t timeout_ms = 10'000;
  std::function<void(Result<ClientResponse>)> done;
  std::shared_ptr<const AddressPolicy> policy;  // null: any address

  void Fail(const std::string& what, beast::error_code ec) {
    auto d = std::move(done);
    if (d) d(Unavailable(what + " " + url.host + ": " + ec.message()));
  }

  void Start() {
    auto self = shared_from_this();
    resolver.async_resolve(
        url.host, std::to_string(url.port),
        [self](beast::error_code ec, tcp::resolver::results_type results) {
          if (ec) return self->Fail("resolve", ec);
          std::vector<tcp::endpoint> allowed;
          Status refused = Status::Ok();
          for (const auto& r : results) {
            Status st = self->policy ? self->policy->Check(r.endpoint().address().to_string())
                                     : Status::Ok();
            if (st.ok()) {
              allowed.push_back(r.endpoint());
            } else if (refused.ok()) {
              refused = st;
            }
          }
          if (allowed.empty()) {
            auto d = std::move(self->done);
            if (d) d(PermissionDenied(self->url.host + ": " + refused.message()));
            return;
          }
          self->stream.expires_after(std::chrono::milliseconds(self->timeout_ms));
          self->stream.async_connect(allowed, [self](beast::error_code ec2, const tcp::endpoint&) {
            if (ec2) return self->Fail("connect", ec2);
            self->Write();
          });
        });
  }
  void Write() {
    auto self = shared_from_this();
    bhttp::async_write(stream, req, [self](beast::error_code ec, size_t) {
      if (ec) return self->Fail("write to", ec);
      bhttp::async_read(self->stream, self->buffer, self->res,
                        [self](beast::error_code ec2, size_t) {
                          if (ec2) return self->Fail("read from", ec2);
                          beast::error_code ignored;
                          self->stream.socket().shutdown(tcp::socket::shutdown_both, ignored);
                          auto d = std::move(self->done);
                          d(ToClientResponse(self->res));
                        });
    });
  }
};

}  // namespace

void AsyncFetch(EventLoop* loop, const std::string& method, const std::string& url,
                std::string body, std::vector<Header> headers, int64_t timeout_ms,
                std::function<void(Result<ClientResponse>)> done,
                std::shared_ptr<const AddressPolicy> policy) {
  auto parsed = ParseUrl(url);
  if (!parsed.ok()) {
    loop->Post([done = std::move(done), st = parsed.status()] { done(st); });
    return;
  }
  auto op = std::make_shared<FetchOp>(loop->impl()->io);
  op->url = std::move(*parsed);
  op->timeout_ms = timeout_ms;
  op->done = std::move(done);
  op->policy = std::move(policy);
  headers.push_back({"Connection", "close"});
  const std::string& h = op->url.host;
  const std::string host = h.find(':') == std::string::npos ? h : "[" + h + "]";  // IPv6
  op->req = MakeRequest(method, host + ":" + std::to_string(op->url.port), op->url.target,
                        std::move(body), headers);
  op->req.keep_alive(false);
  op->Start();
}

}  // namespace gantry::http
