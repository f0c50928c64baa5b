#pragma once
// HTTP/1.1 server and clients, and the event loop they run on. This module is the only one
// that includes Boost.Asio/Beast; its public headers are Boost-free (pimpl).
//
// Threading: an EventLoop runs on one thread. Handlers, timers and posted functions all run
// on that thread, so state that is touched only from them needs no lock (STYLE.md §3).

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"
#include "http/address_policy.h"

namespace gantry::http {

struct Header {
  std::string name;
  std::string value;
};

struct Request {
  std::string method;  // "GET", "POST", ...
  std::string target;  // path and query, e.g. "/v2/ep/run?wait=1000"
  std::vector<Header> headers;
  std::string body;

  std::string_view path() const;
  std::string_view query() const;  // after '?', without it; empty when none
  // Case-insensitive header lookup; empty when absent.
  std::string_view header(std::string_view name) const;
  // Percent-decoded query parameter; nullopt when absent.
  std::optional<std::string> param(std::string_view key) const;
};

struct Response {
  int status = 200;
  std::string body;
  std::string content_type = "application/json";
  std::vector<Header> headers;
};

// Answers one request. Send() must be called exactly once, on the loop thread. It may be
// called long after the handler returned (long-polls). `on_done(written)` runs on the loop
// once the write finished; written=false means the client was gone and never got it.
class Responder {
 public:
  virtual ~Responder() = default;
  virtual void Send(Response response, std::function<void(bool written)> on_done = {}) = 0;
};

using Handler = std::function<void(Request&& request, std::shared_ptr<Responder> responder)>;

class EventLoop {
 public:
  EventLoop();
  ~EventLoop();
  EventLoop(const EventLoop&) = delete;
  EventLoop& operator=(const EventLoop&) = delete;

  // Runs `fn` on the loop thread. Thread-safe.
  void Post(std::function<void()> fn);
  // Runs `fn` on the loop after `delay_ms`. Loop thread only.
  void After(int64_t delay_ms, std::function<void()> fn);
  // Runs `fn` on the loop every `interval_ms` until Stop(). Loop thread or before Run().
  void Every(int64_t interval_ms, std::function<void()> fn);
  // Runs `fn` on the loop when one of `signals` arrives (e.g. SIGTERM). Before Run().
  void OnSignals(std::vector<int> signals, std::function<void(int)> fn);
  // Runs the loop on the calling thread until Stop().
  void Run();
  // Makes Run() return. Thread-safe.
  void Stop();

  struct Impl;
  Impl* impl() { return impl_.get(); }

 private:
  std::unique_ptr<Impl> impl_;
};

struct ServerOptions {
  std::string host = "127.0.0.1";
  uint16_t port = 0;  // 0: any free port; see HttpServer::port().
  // Requests whose body is larger get 413 and the connection is closed. Default: 20 MiB + 64 KiB.
  size_t body_limit = (20u << 20) + (64u << 10);
  // A request must arrive whole within this after its first byte. Default: 30 s.
  int64_t read_timeout_ms = 30'000;
  // A keep-alive connection with no request for this long is closed. Default: 120 s.
  int64_t idle_timeout_ms = 120'000;
  // The body limit of a request whose body may be larger than `body_limit_unasked` (a larger
  // Content-Length, or chunked), decided from its head once the head has arrived and before
  // its body is read: a request over it gets 413 without its body being read. Unset: body_limit
  // for every request. The server gives an unauthenticated request a small limit, so that
  // nobody without a key can make it buffer megabytes. Runs on the loop thread.
  std::function<size_t(std::string_view method, std::string_view target,
                       std::string_view authorization)>
      body_limit_for;
  // A body announced this small is read without asking body_limit_for (most requests: the
  // question costs a route lookup and a key check). Default: 64 KiB.
  size_t body_limit_unasked = 64u << 10;
  // At most this many open connections; past it, accepting a new one closes the connection
  // idle the longest (one waiting for its next request), or, when none is idle, the new one.
  // 0: from RLIMIT_NOFILE (its soft limit less 64 descriptors for everything else).
  size_t max_connections = 0;
  // Serve HTTPS with this certificate chain and private key (PEM files); "" for plain HTTP.
  std::string tls_cert_file;
  std::string tls_key_file;
};

class HttpServer {
 public:
  // `handler` may be empty when Serve() gives it.
  HttpServer(EventLoop* loop, ServerOptions options, Handler handler = {});
  ~HttpServer();
  // Binds and listens, so that port() is known before the handler exists (connections wait in
  // the kernel's backlog until Serve()). Call before or on the loop thread.
  Status Listen();
  // Starts accepting, answering with `handler` (or the constructor's when empty). Listens first
  // if Listen() was not called. Call once, before or on the loop thread.
  Status Serve(Handler handler = {});
  // Listen() and Serve() with the constructor's handler.
  Status Start() { return Serve(); }
  uint16_t port() const;
  // Stops accepting and closes every connection. Loop thread.
  void Stop();

  struct Impl;

 private:
  std::shared_ptr<Impl> impl_;
};

struct Url {
  std::string host;    // a name or an address; an IPv6 one without its URL brackets
  uint16_t port = 80;  // 443 for https by default
  std::string target;  // path and query, "/" at least
  bool tls = false;    // https://
};
// Parses an http:// or https:// URL.
Result<Url> ParseUrl(std::string_view url);

// The CA certificates a client trusts for https://: $GANTRY_CA_FILE (a PEM file, for a private
// CA) when set, else the system's. Every certificate is verified, and its name checked against
// the host.
std::string CaFile();

struct ClientResponse {
  int status = 0;
  std::string body;
  std::vector<Header> headers;
};

// A blocking client holding one keep-alive connection to one host; reconnects when needed.
// Not thread-safe: one per thread.
class HttpClient {
 public:
  // `tls`: speak HTTPS, verifying the server's certificate (CaFile()).
  HttpClient(std::string host, uint16_t port, bool tls = false);
  // The host, port and scheme of `url`.
  explicit HttpClient(const Url& url) : HttpClient(url.host, url.port, url.tls) {}
  ~HttpClient();
  Result<ClientResponse> Do(const std::string& method, const std::string& target,
                            const std::string& body, const std::vector<Header>& headers,
                            int64_t timeout_ms = 30'000);

  struct Impl;

 private:
  std::unique_ptr<Impl> impl_;
};

// One request on a fresh connection, run on `loop`; `done` runs on the loop thread. With a
// `policy`, only the addresses the host resolves to that it allows are tried; none allowed
// fails the fetch with the policy's reason (PermissionDenied).
void AsyncFetch(EventLoop* loop, const std::string& method, const std::string& url,
                std::string body, std::vector<Header> headers, int64_t timeout_ms,
                std::function<void(Result<ClientResponse>)> done,
                std::shared_ptr<const AddressPolicy> policy = nullptr);

std::string PercentDecode(std::string_view s);
std::string PercentEncode(std::string_view s);

}  // namespace gantry::http
