#pragma once
// Internal to the http module: the Boost side of EventLoop.
#include <boost/asio.hpp>
#include <boost/asio/ssl/context.hpp>
#include <boost/beast/core.hpp>

#include "http/http.h"

namespace gantry::http {

namespace asio = boost::asio;
namespace beast = boost::beast;

// The TLS versions every context of this module speaks: 1.2 and later.
inline void SetTlsFloor(asio::ssl::context& ctx) {
  ctx.set_options(asio::ssl::context::default_workarounds | asio::ssl::context::no_sslv2 |
                  asio::ssl::context::no_sslv3 | asio::ssl::context::no_tlsv1 |
                  asio::ssl::context::no_tlsv1_1);
}

struct EventLoop::Impl {
  struct Periodic {
    Periodic(asio::io_context& io, int64_t ms, std::function<void()> f)
        : timer(io), interval_ms(ms), fn(std::move(f)) {}
    asio::steady_timer timer;
    int64_t interval_ms;
    std::function<void()> fn;
  };
  static void Arm(Periodic* p) {
    p->timer.expires_after(std::chrono::milliseconds(p->interval_ms));
    p->timer.async_wait([p](beast::error_code ec) {
      if (ec) return;
      p->fn();
      Arm(p);
    });
  }

  asio::io_context io{1};
  std::vector<std::unique_ptr<Periodic>> periodic;  // destroyed before `io`
  std::vector<std::shared_ptr<void>> signal_handlers;
};

}  // namespace gantry::http
