// HTTP clients on Boost.Beast: a blocking keep-alive client and a one-shot async fetch.
#include <strings.h>

#include <boost/asio.hpp>
#include <boost/asio/ssl/host_name_verification.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>
#include <cstdlib>
#include <mutex>

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

// The client context that verifies servers against CaFile(), made once per CA file and shared
// by every client and webhook of the process (loading the system's CAs costs milliseconds).
// Thread-safe.
Result<std::shared_ptr<asio::ssl::context>> ClientTlsContext() {
  static std::mutex mu;
  static std::string made_for;
  static std::shared_ptr<asio::ssl::context> made;
  const std::string ca = CaFile();
  std::lock_guard<std::mutex> lock(mu);
  if (made && made_for == ca) return made;
  auto ctx = std::make_shared<asio::ssl::context>(asio::ssl::context::tls_client);
  SetTlsFloor(*ctx);
  ctx->set_verify_mode(asio::ssl::verify_peer);
  beast::error_code ec;
  if (ca.empty()) {
    ctx->set_default_verify_paths(ec);
  } else {
    ctx->load_verify_file(ca, ec);
    // What the operator names is trusted as it is, a server's own certificate included.
    X509_STORE_set_flags(SSL_CTX_get_cert_store(ctx->native_handle()), X509_V_FLAG_PARTIAL_CHAIN);
  }
  if (ec) {
    return InvalidArgument("TLS: cannot load the CA certificates " +
                           (ca.empty() ? std::string("of the system") : ca) + ": " + ec.message());
  }
  made_for = ca;
  made = std::move(ctx);
  return made;
}

// Prepares `stream` to check that the server's certificate names `host` (and sends it by SNI).
void ExpectHost(beast::ssl_stream<beast::tcp_stream>& stream, const std::string& host) {
  SSL_set_tlsext_host_name(stream.native_handle(), host.c_str());
  stream.set_verify_callback(asio::ssl::host_name_verification(host));
}

}  // namespace

std::string CaFile() {
  const char* f = getenv("GANTRY_CA_FILE");
  return f ? f : "";
}

struct HttpClient::Impl {
  Impl(std::string h, uint16_t p, bool t) : host(std::move(h)), port(p), tls(t), plain(io) {
    if (!tls) return;
    auto made = ClientTlsContext();
    if (made.ok()) {
      ctx = std::move(*made);
    } else {
      init_error = made.status();
    }
  }

  beast::tcp_stream& lowest() { return tls ? beast::get_lowest_layer(*secure) : plain; }

  // Runs `fn` (which starts asynchronous work on io) to its end.
  template <class Fn>
  void RunToEnd(Fn&& fn) {
    fn();
    io.restart();
    io.run();
  }

  template <class Stream>
  beast::error_code ExchangeOn(Stream& stream, bhttp::request<bhttp::string_body>& req,
                               bhttp::response<bhttp::string_body>& res) {
    beast::error_code result = asio::error::timed_out;
    RunToEnd([&] {
      bhttp::async_write(stream, req, [&](beast::error_code ec, size_t) {
        if (ec) {
          result = ec;
          return;
        }
        bhttp::async_read(stream, buffer, res,
                          [&](beast::error_code ec2, size_t) { result = ec2; });
      });
    });
    return result;
  }

  // Runs one exchange on the open connection.
  beast::error_code Exchange(bhttp::request<bhttp::string_body>& req,
                             bhttp::response<bhttp::string_body>& res, int64_t timeout_ms) {
    buffer.clear();
    lowest().expires_after(std::chrono::milliseconds(timeout_ms));
    return tls ? ExchangeOn(*secure, req, res) : ExchangeOn(plain, req, res);
  }

  beast::error_code Connect(int64_t timeout_ms) {
    beast::error_code result = asio::error::timed_out;
    tcp::resolver resolver(io);
    beast::error_code ec;
    auto results = resolver.resolve(host, std::to_string(port), ec);
    if (ec) return ec;
    if (tls) {
      secure = std::make_unique<beast::ssl_stream<beast::tcp_stream>>(io, *ctx);
      ExpectHost(*secure, host);
    }
    lowest().expires_after(std::chrono::milliseconds(timeout_ms));
    RunToEnd([&] {
      lowest().async_connect(results, [&](beast::error_code ec2, const tcp::endpoint&) {
        result = ec2;
        if (ec2 || !tls) return;
        secure->async_handshake(asio::ssl::stream_base::client,
                                [&](beast::error_code ec3) { result = ec3; });
      });
    });
    if (!result) lowest().socket().set_option(tcp::no_delay(true), ec);
    connected = !result;
    return result;
  }

  void Close() {
    beast::error_code ignored;
    lowest().socket().close(ignored);
    connected = false;
  }

  std::string host;
  uint16_t port;
  bool tls;
  Status init_error;  // the TLS context could not be made
  asio::io_context io;
  beast::tcp_stream plain;                                       // !tls
  std::shared_ptr<asio::ssl::context> ctx;                       // tls
  std::unique_ptr<beast::ssl_stream<beast::tcp_stream>> secure;  // tls: one per connection
  beast::flat_buffer buffer;
  bool connected = false;
};

HttpClient::HttpClient(std::string host, uint16_t port, bool tls)
    : impl_(std::make_unique<Impl>(std::move(host), port, tls)) {}
HttpClient::~HttpClient() = default;

Result<ClientResponse> HttpClient::Do(const std::string& method, const std::string& target,
                                      const std::string& body, const std::vector<Header>& headers,
                                      int64_t timeout_ms) {
  std::string host_header = impl_->host + ":" + std::to_string(impl_->port);
  if (!impl_->init_error.ok()) return impl_->init_error;
  for (int attempt = 0; attempt < 2; ++attempt) {
    bool reused = impl_->connected;
    if (!impl_->connected) {
      beast::error_code ec = impl_->Connect(timeout_ms);
      if (ec) {
        impl_->Close();
        return Unavailable("cannot connect to " + std::string(impl_->tls ? "https://" : "") +
                           host_header + ": " + ec.message());
      }
    }
    auto req = MakeRequest(method, host_header, target, body, headers);
    bhttp::response<bhttp::string_body> res;
    res.body().reserve(256);
    beast::error_code ec = impl_->Exchange(req, res, timeout_ms);
    if (ec) {
      impl_->Close();
      // A kept-alive connection the server closed meanwhile: retry once on a fresh one.
      if (reused && ec != beast::error::timeout) continue;
      if (ec == beast::error::timeout) {
        return Status(Code::kDeadlineExceeded, "request to " + host_header + " timed out");
      }
      return Unavailable("request to " + host_header + " failed: " + ec.message());
    }
    if (!res.keep_alive()) impl_->Close();
    return ToClientResponse(res);
  }
  return Unavailable("request to " + host_header + " failed");
}

namespace {

struct FetchOp : std::enable_shared_from_this<FetchOp> {
  FetchOp(asio::io_context& io) : resolver(io), plain(io) {}
  tcp::resolver resolver;
  beast::tcp_stream plain;                                       // http://
  std::shared_ptr<asio::ssl::context> ctx;                       // https://
  std::unique_ptr<beast::ssl_stream<beast::tcp_stream>> secure;  // https://
  beast::flat_buffer buffer;
  bhttp::request<bhttp::string_body> req;
  bhttp::response<bhttp::string_body> res;
  Url url;
  int64_t timeout_ms = 10'000;
  std::function<void(Result<ClientResponse>)> done;
  std::shared_ptr<const AddressPolicy> policy;  // null: any address

  beast::tcp_stream& lowest() { return secure ? beast::get_lowest_layer(*secure) : plain; }

  void Fail(const std::string& what, beast::error_code ec) {
    auto d = std::move(done);
    if (d) d(Unavailable(what + " " + url.host + ": " + ec.message()));
  }

  void Start() {
    if (url.tls) {
      auto made = ClientTlsContext();
      if (!made.ok()) {
        auto d = std::move(done);
        if (d) d(made.status());
        return;
      }
      ctx = std::move(*made);
      secure = std::make_unique<beast::ssl_stream<beast::tcp_stream>>(plain.get_executor(), *ctx);
      ExpectHost(*secure, url.host);
    }
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
          self->lowest().expires_after(std::chrono::milliseconds(self->timeout_ms));
          self->lowest().async_connect(
              allowed, [self](beast::error_code ec2, const tcp::endpoint&) {
                if (ec2) return self->Fail("connect", ec2);
                if (!self->secure) return self->Write(self->plain);
                self->secure->async_handshake(asio::ssl::stream_base::client,
                                              [self](beast::error_code ec3) {
                                                if (ec3) return self->Fail("TLS with", ec3);
                                                self->Write(*self->secure);
                                              });
              });
        });
  }
  template <class Stream>
  void Write(Stream& stream) {
    auto self = shared_from_this();
    bhttp::async_write(stream, req, [self, &stream](beast::error_code ec, size_t) {
      if (ec) return self->Fail("write to", ec);
      bhttp::async_read(stream, self->buffer, self->res, [self](beast::error_code ec2, size_t) {
        if (ec2) return self->Fail("read from", ec2);
        beast::error_code ignored;
        self->lowest().socket().shutdown(tcp::socket::shutdown_both, ignored);
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
