// EventLoop and HttpServer on Boost.Asio/Beast.
#include <sys/resource.h>
#include <sys/socket.h>

#include <array>
#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>
#include <cerrno>
#include <map>
#include <optional>
#include <unordered_set>

#include "common/log.h"
#include "http/http.h"
#include "http/loop_impl.h"

namespace gantry::http {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace bhttp = boost::beast::http;
using tcp = asio::ip::tcp;

EventLoop::EventLoop() : impl_(std::make_unique<Impl>()) {}
EventLoop::~EventLoop() = default;

void EventLoop::Post(std::function<void()> fn) { asio::post(impl_->io, std::move(fn)); }

void EventLoop::After(int64_t delay_ms, std::function<void()> fn) {
  auto t = std::make_shared<asio::steady_timer>(impl_->io, std::chrono::milliseconds(delay_ms));
  t->async_wait([t, fn = std::move(fn)](beast::error_code ec) {
    if (!ec) fn();
  });
}

void EventLoop::Every(int64_t interval_ms, std::function<void()> fn) {
  auto p = std::make_unique<Impl::Periodic>(impl_->io, interval_ms, std::move(fn));
  Impl::Arm(p.get());
  impl_->periodic.push_back(std::move(p));
}

void EventLoop::OnSignals(std::vector<int> signals, std::function<void(int)> fn) {
  auto set = std::make_shared<asio::signal_set>(impl_->io);
  for (int s : signals) set->add(s);
  auto handler = std::make_shared<std::function<void(beast::error_code, int)>>();
  *handler = [set, fn = std::move(fn), weak = std::weak_ptr(handler)](beast::error_code ec,
                                                                      int sig) {
    if (ec) return;
    fn(sig);
    if (auto h = weak.lock()) set->async_wait(*h);
  };
  set->async_wait(*handler);
  impl_->signal_handlers.push_back(handler);
}

void EventLoop::Run() {
  auto guard = asio::make_work_guard(impl_->io);
  impl_->io.run();
}

void EventLoop::Stop() { impl_->io.stop(); }

// ---------------------------------------------------------------------------------------------

// What the server and the responders see of a connection, plain or TLS.
class ConnectionBase {
 public:
  virtual ~ConnectionBase() = default;
  virtual void Close() = 0;
  virtual bool stopping() const = 0;
  virtual void Send(bhttp::response<bhttp::string_body> res, bool keep_alive,
                    std::function<void(bool)> on_done) = 0;
};

struct HttpServer::Impl : std::enable_shared_from_this<HttpServer::Impl> {
  Impl(EventLoop* l, ServerOptions o, Handler h)
      : loop(l), options(std::move(o)), handler(std::move(h)), acceptor(l->impl()->io) {}
  void Accept();

  EventLoop* loop;
  ServerOptions options;
  Handler handler;
  tcp::acceptor acceptor;
  // Makes room for one more connection (closes the one idle the longest); false if none is idle.
  bool EvictIdle();
  size_t ConnectionCap() const;

  uint16_t port = 0;
  size_t connection_cap = 0;  // ConnectionCap(), read once by Serve()
  bool stopped = false;
  std::unordered_set<ConnectionBase*> connections;  // loop thread
  // Connections waiting for their next request, by when they started waiting (loop thread).
  std::map<std::pair<int64_t, uint64_t>, ConnectionBase*> idle;
  // Set when the server speaks TLS (ServerOptions::tls_cert_file).
  std::unique_ptr<asio::ssl::context> tls;
  uint64_t idle_seq = 0;
  std::optional<asio::steady_timer> accept_retry;  // after EMFILE/ENFILE
  uint64_t refused = 0;  // connections closed at accept: no room (logged now and then)
};

// One client connection over `Stream`: beast::tcp_stream, or a TLS stream over one.
template <class Stream>
class Connection final : public ConnectionBase,
                         public std::enable_shared_from_this<Connection<Stream>> {
 public:
  Connection(Stream stream, std::shared_ptr<HttpServer::Impl> server)
      : stream_(std::move(stream)), server_(std::move(server)) {
    server_->connections.insert(this);
  }
  ~Connection() override {
    LeaveIdle();
    server_->connections.erase(this);
  }

  void Start();
  void Close() override {
    LeaveIdle();
    beast::error_code ec;
    lowest().socket().shutdown(tcp::socket::shutdown_both, ec);
    lowest().close();
  }

  bool stopping() const override { return server_->stopped; }
  // Called by ResponderImpl.
  void Send(bhttp::response<bhttp::string_body> res, bool keep_alive,
            std::function<void(bool)> on_done) override;

 private:
  using std::enable_shared_from_this<Connection<Stream>>::shared_from_this;
  beast::tcp_stream& lowest() { return beast::get_lowest_layer(stream_); }

  void WaitForRequest();
  void ReadRequest();
  // After an early error reply: stop sending, read and drop what the client still sends (so
  // that it gets to read our reply instead of a reset), then close. Bounded in bytes and time.
  void LingeringClose();
  // While a handler holds the request (a long-poll), notices the client going away, so that
  // what is sent to it later is reported as not written instead of vanishing into a dead socket.
  void WatchForClose();
  void OnHeader(beast::error_code ec);
  void OnRead(beast::error_code ec);
  void SendError(int status, const char* code, const std::string& message);
  void EnterIdle();
  void LeaveIdle();

  Stream stream_;
  beast::flat_buffer buffer_;
  std::optional<bhttp::request_parser<bhttp::string_body>> parser_;
  std::shared_ptr<HttpServer::Impl> server_;
  bool linger_after_write_ = false;
  bool awaiting_response_ = false;  // a handler holds the current request
  bool peer_closed_ = false;        // the client closed its side while we held its request
  std::shared_ptr<std::function<void()>> lingering_;      // keeps the drain loop alive
  std::optional<std::pair<int64_t, uint64_t>> idle_key_;  // in server_->idle while set
};

using PlainConnection = Connection<beast::tcp_stream>;
using TlsConnection = Connection<beast::ssl_stream<beast::tcp_stream>>;

template <class Stream>
void Connection<Stream>::Start() {
  if constexpr (std::is_same_v<Stream, beast::tcp_stream>) {
    WaitForRequest();
  } else {
    // The handshake first, within the time a request has to arrive.
    lowest().expires_after(std::chrono::milliseconds(server_->options.read_timeout_ms));
    stream_.async_handshake(asio::ssl::stream_base::server,
                            [self = shared_from_this()](beast::error_code ec) {
                              if (ec) return self->Close();
                              self->WaitForRequest();
                            });
  }
}

template <class Stream>
void Connection<Stream>::EnterIdle() {
  idle_key_.emplace(std::chrono::steady_clock::now().time_since_epoch().count(),
                    ++server_->idle_seq);
  server_->idle[*idle_key_] = this;
}

template <class Stream>
void Connection<Stream>::LeaveIdle() {
  if (!idle_key_) return;
  server_->idle.erase(*idle_key_);
  idle_key_.reset();
}

bool HttpServer::Impl::EvictIdle() {
  if (idle.empty()) return false;
  ConnectionBase* oldest = idle.begin()->second;
  oldest->Close();  // leaves `idle`; its pending read ends with an error and frees it
  return true;
}

size_t HttpServer::Impl::ConnectionCap() const {
  if (options.max_connections > 0) return options.max_connections;
  rlimit rl{};
  if (getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur == RLIM_INFINITY) return 1u << 20;
  return rl.rlim_cur > 128 ? rl.rlim_cur - 64 : rl.rlim_cur / 2;
}

class ResponderImpl final : public Responder {
 public:
  ResponderImpl(std::shared_ptr<ConnectionBase> conn, bool keep_alive, unsigned version)
      : conn_(std::move(conn)), keep_alive_(keep_alive), version_(version) {}
  ~ResponderImpl() override {
    if (conn_) {  // A handler dropped its responder without answering: a bug; answer 500.
      // (At shutdown, held long-polls are dropped on purpose.)
      if (!conn_->stopping()) GLOG_ERROR("http: a handler dropped a request without answering");
      Send(Response{500, R"({"error":{"code":"internal","message":"no response"}})"});
    }
  }
  void Send(Response r, std::function<void(bool)> on_done = {}) override {
    if (!conn_) return;
    bhttp::response<bhttp::string_body> res{static_cast<bhttp::status>(r.status), version_};
    res.set(bhttp::field::server, "gantry");
    if (!r.content_type.empty() && r.status != 204) {
      res.set(bhttp::field::content_type, r.content_type);
    }
    for (auto& h : r.headers) res.set(h.name, h.value);
    res.body() = std::move(r.body);
    res.keep_alive(keep_alive_);
    res.prepare_payload();
    auto conn = std::move(conn_);
    conn_.reset();
    conn->Send(std::move(res), keep_alive_, std::move(on_done));
  }

 private:
  std::shared_ptr<ConnectionBase> conn_;
  bool keep_alive_;
  unsigned version_;
};

template <class Stream>
void Connection<Stream>::WaitForRequest() {
  parser_.emplace();
  // No limit while the head is read: the limit is decided from the head (OnHeader), and a
  // Content-Length over the parser's limit would fail the head itself.
  parser_->body_limit(boost::none);
  parser_->header_limit(64 * 1024);
  if (buffer_.size() > 0) return ReadRequest();  // pipelined bytes already here
  // Idle phase: wait for the first byte of the next request under the idle timeout.
  EnterIdle();
  lowest().expires_after(std::chrono::milliseconds(server_->options.idle_timeout_ms));
  auto buf = buffer_.prepare(4096);
  stream_.async_read_some(buf, [self = shared_from_this()](beast::error_code ec, size_t n) {
    self->LeaveIdle();
    if (ec) return self->Close();
    self->buffer_.commit(n);
    self->ReadRequest();
  });
}

template <class Stream>
void Connection<Stream>::ReadRequest() {
  lowest().expires_after(std::chrono::milliseconds(server_->options.read_timeout_ms));
  bhttp::async_read_header(
      stream_, buffer_, *parser_,
      [self = shared_from_this()](beast::error_code ec, size_t) { self->OnHeader(ec); });
}

template <class Stream>
void Connection<Stream>::OnHeader(beast::error_code ec) {
  if (ec) return OnRead(ec);
  if (parser_->is_done()) return OnRead({});  // no body
  const ServerOptions& o = server_->options;
  const auto length = parser_->content_length();  // none: chunked
  size_t limit = o.body_limit;
  if (o.body_limit_for && (!length || *length > o.body_limit_unasked)) {
    const auto& head = parser_->get();
    limit = std::min(limit, o.body_limit_for(std::string_view(head.method_string()),
                                             std::string_view(head.target()),
                                             std::string_view(head[bhttp::field::authorization])));
  }
  if (length && *length > limit) {
    return OnRead(bhttp::error::body_limit);  // answered before a byte of the body is read
  }
  parser_->body_limit(limit);  // a chunked body is held to it as it arrives
  // The body, or its start, usually came with the head: parse what is here at once rather than
  // through another asynchronous read.
  while (!parser_->is_done() && buffer_.size() > 0) {
    beast::error_code put_ec;
    const size_t n = parser_->put(buffer_.data(), put_ec);
    buffer_.consume(n);
    if (put_ec == bhttp::error::need_more || (!put_ec && n == 0)) break;
    if (put_ec) return OnRead(put_ec);
  }
  if (parser_->is_done()) return OnRead({});
  bhttp::async_read(
      stream_, buffer_, *parser_,
      [self = shared_from_this()](beast::error_code ec2, size_t) { self->OnRead(ec2); });
}

template <class Stream>
void Connection<Stream>::LingeringClose() {
  beast::error_code ec;
  lowest().socket().shutdown(tcp::socket::shutdown_send, ec);
  lowest().expires_after(std::chrono::seconds(5));
  auto scratch = std::make_shared<std::array<char, 65536>>();
  auto left = std::make_shared<size_t>(64u << 20);
  auto drain = std::make_shared<std::function<void()>>();
  *drain = [self = shared_from_this(), scratch, left, weak = std::weak_ptr(drain)] {
    self->stream_.async_read_some(
        asio::buffer(*scratch), [self, scratch, left, weak](beast::error_code ec, size_t n) {
          auto again = weak.lock();
          if (ec || n >= *left || !again) {
            self->lingering_.reset();  // breaks the self -> drain -> self cycle
            return self->Close();
          }
          *left -= n;
          (*again)();
        });
  };
  (*drain)();
  lingering_ = drain;
}

template <class Stream>
void Connection<Stream>::SendError(int status, const char* code, const std::string& message) {
  bhttp::response<bhttp::string_body> res{static_cast<bhttp::status>(status), 11};
  res.set(bhttp::field::server, "gantry");
  res.set(bhttp::field::content_type, "application/json");
  res.body() = std::string(R"({"error":{"code":")") + code + R"(","message":")" + message + "\"}}";
  res.keep_alive(false);
  res.prepare_payload();
  linger_after_write_ = true;
  Send(std::move(res), false, {});
}

template <class Stream>
void Connection<Stream>::OnRead(beast::error_code ec) {
  if (ec == bhttp::error::body_limit) {
    return SendError(413, "payload_too_large", "request body exceeds the size limit");
  }
  if (ec == bhttp::error::header_limit) {
    return SendError(431, "invalid_argument", "request headers too large");
  }
  if (ec) {
    if (ec != bhttp::error::end_of_stream && ec != beast::error::timeout &&
        ec != asio::error::connection_reset && ec != asio::error::eof &&
        ec != asio::error::operation_aborted) {
      // Garbage on the wire: answer 400 and close.
      return SendError(400, "invalid_argument", "malformed HTTP request");
    }
    return Close();
  }
  lowest().expires_never();  // the handler may hold the request (long-poll)
  auto msg = parser_->release();
  Request req;
  req.method = std::string(msg.method_string());
  req.target = std::string(msg.target());
  req.headers.reserve(8);
  for (const auto& f : msg) {
    req.headers.push_back({std::string(f.name_string()), std::string(f.value())});
  }
  req.body = std::move(msg.body());
  auto responder =
      std::make_shared<ResponderImpl>(shared_from_this(), msg.keep_alive(), msg.version());
  awaiting_response_ = true;
  try {
    server_->handler(std::move(req), responder);
  } catch (const std::exception& e) {
    GLOG_ERROR("http: handler threw: %s", e.what());
    responder->Send(Response{500, R"({"error":{"code":"internal","message":"internal error"}})"});
  }
  if (awaiting_response_) WatchForClose();
}

template <class Stream>
void Connection<Stream>::WatchForClose() {
  lowest().socket().async_wait(
      tcp::socket::wait_read, [self = shared_from_this()](beast::error_code ec) {
        if (ec || !self->awaiting_response_) return;
        // Readable while we hold its request: either the client closed (EOF) or it pipelined the
        // next request (left in the socket for the next read).
        char c;
        ssize_t n = ::recv(self->lowest().socket().native_handle(), &c, 1, MSG_PEEK | MSG_DONTWAIT);
        if (n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)) {
          self->peer_closed_ = true;
        }
      });
}

template <class Stream>
void Connection<Stream>::Send(bhttp::response<bhttp::string_body> res, bool keep_alive,
                              std::function<void(bool)> on_done) {
  awaiting_response_ = false;
  if (peer_closed_) {  // the client is gone: nothing can reach it
    if (on_done) on_done(false);
    return Close();
  }
  auto sp = std::make_shared<bhttp::response<bhttp::string_body>>(std::move(res));
  lowest().expires_after(std::chrono::milliseconds(server_->options.read_timeout_ms));
  bhttp::async_write(stream_, *sp,
                     [self = shared_from_this(), sp, keep_alive, on_done = std::move(on_done)](
                         beast::error_code ec, size_t) {
                       if (on_done) on_done(!ec);
                       if (!ec && self->linger_after_write_) return self->LingeringClose();
                       if (ec || !keep_alive || self->server_->stopped) return self->Close();
                       self->WaitForRequest();
                     });
}

void HttpServer::Impl::Accept() {
  acceptor.async_accept([self = shared_from_this()](beast::error_code ec, tcp::socket socket) {
    if (self->stopped) return;
    if (ec == asio::error::no_descriptors || ec.value() == ENFILE || ec.value() == ENOBUFS ||
        ec.value() == ENOMEM) {
      // Out of descriptors: free one if a connection is idle, and try again at once; else wait
      // (a spinning accept would take the loop from everything else).
      if (self->EvictIdle()) return self->Accept();
      GLOG_WARN("http: accept: %s; retrying in 100 ms", ec.message().c_str());
      self->accept_retry.emplace(self->loop->impl()->io, std::chrono::milliseconds(100));
      self->accept_retry->async_wait([self](beast::error_code e) {
        if (!e && !self->stopped) self->Accept();
      });
      return;
    }
    if (!ec) {
      if (self->connections.size() >= self->connection_cap && !self->EvictIdle()) {
        if (self->refused++ % 1000 == 0) {  // the first, then every thousandth
          GLOG_WARN("http: %zu connections, none idle: closing new ones (%llu so far)",
                    self->connections.size(), static_cast<unsigned long long>(self->refused));
        }
        socket.close(ec);
      } else {
        socket.set_option(tcp::no_delay(true), ec);
        if (self->tls) {
          std::make_shared<TlsConnection>(
              beast::ssl_stream<beast::tcp_stream>(std::move(socket), *self->tls), self)
              ->Start();
        } else {
          std::make_shared<PlainConnection>(beast::tcp_stream(std::move(socket)), self)->Start();
        }
      }
    }
    self->Accept();
  });
}

HttpServer::HttpServer(EventLoop* loop, ServerOptions options, Handler handler)
    : impl_(std::make_shared<Impl>(loop, std::move(options), std::move(handler))) {}

HttpServer::~HttpServer() { Stop(); }

Status HttpServer::Listen() {
  if (impl_->acceptor.is_open()) return Status::Ok();
  if (!impl_->options.tls_cert_file.empty() && !impl_->tls) {
    auto ctx = std::make_unique<asio::ssl::context>(asio::ssl::context::tls_server);
    SetTlsFloor(*ctx);
    beast::error_code ec;
    ctx->use_certificate_chain_file(impl_->options.tls_cert_file, ec);
    if (ec) {
      return InvalidArgument("TLS certificate " + impl_->options.tls_cert_file + ": " +
                             ec.message());
    }
    ctx->use_private_key_file(impl_->options.tls_key_file, asio::ssl::context::pem, ec);
    if (ec) return InvalidArgument("TLS key " + impl_->options.tls_key_file + ": " + ec.message());
    impl_->tls = std::move(ctx);
  }
  beast::error_code ec;
  auto addr = asio::ip::make_address(impl_->options.host, ec);
  if (ec) return InvalidArgument("bad listen address: " + impl_->options.host);
  tcp::endpoint ep(addr, impl_->options.port);
  impl_->acceptor.open(ep.protocol(), ec);
  if (!ec) impl_->acceptor.set_option(asio::socket_base::reuse_address(true), ec);
  if (!ec) impl_->acceptor.bind(ep, ec);
  if (!ec) impl_->acceptor.listen(1024, ec);
  if (ec) {
    impl_->acceptor.close(ec);
    return Unavailable("cannot listen on " + impl_->options.host + ":" +
                       std::to_string(impl_->options.port) + ": " + ec.message());
  }
  impl_->port = impl_->acceptor.local_endpoint().port();
  return Status::Ok();
}

Status HttpServer::Serve(Handler handler) {
  if (handler) impl_->handler = std::move(handler);
  if (!impl_->handler) return FailedPrecondition("HttpServer::Serve without a handler");
  GANTRY_RETURN_IF_ERROR(Listen());
  impl_->connection_cap = impl_->ConnectionCap();
  impl_->Accept();
  return Status::Ok();
}

uint16_t HttpServer::port() const { return impl_->port; }

void HttpServer::Stop() {
  if (impl_->stopped) return;
  impl_->stopped = true;
  beast::error_code ec;
  impl_->acceptor.close(ec);
  if (impl_->accept_retry) impl_->accept_retry->cancel();
  std::vector<ConnectionBase*> conns(impl_->connections.begin(), impl_->connections.end());
  for (ConnectionBase* c : conns) c->Close();
}

}  // namespace gantry::http
