#include "cli/client.h"

#include <vector>

#include "cli/format.h"
#include "http/http.h"

namespace gantry::cli {
namespace {

// What one exchange with the server came to.
struct Exchange {
  int rc = kExitOk;   // kExitUsage (bad URL) or kExitUnreachable; kExitOk with a reply
  std::string error;  // why there is no reply
  http::ClientResponse response;
};

Exchange Send(const Context& ctx, const std::string& method, const std::string& path,
              const std::string& body, int64_t timeout_ms) {
  Exchange x;
  auto url = http::ParseUrl(ctx.url + path);
  if (!url.ok()) {
    x.rc = kExitUsage;
    x.error = "bad server URL " + ctx.url + ": " + url.status().message();
    return x;
  }
  http::HttpClient client(*url);
  std::vector<http::Header> headers;
  if (!ctx.api_key.empty()) headers.push_back({"Authorization", "Bearer " + ctx.api_key});
  auto r = client.Do(method, url->target, body, headers, timeout_ms);
  if (!r.ok()) {
    x.rc = kExitUnreachable;
    x.error = "cannot reach the server at " + ctx.url + ": " + r.status().message();
    return x;
  }
  x.response = std::move(*r);
  return x;
}

Reply Parse(const http::ClientResponse& r) {
  Reply out{r.status, nullptr};
  if (!r.body.empty()) {
    auto v = ParseJson(r.body);
    out.body = v.ok() ? *v : json::value(r.body);
  }
  return out;
}

}  // namespace

std::optional<Reply> Call(Context& ctx, const std::string& method, const std::string& path,
                          const std::string& body, int64_t timeout_ms, int expected_error) {
  Exchange x = Send(ctx, method, path, body, timeout_ms);
  if (x.rc != kExitOk) {
    ctx.PrintError("gantry: %s\n", x.error.c_str());
    ctx.rc = x.rc;
    return std::nullopt;
  }
  Reply out = Parse(x.response);
  if (out.status >= 400 && out.status != expected_error) {
    std::string msg = x.response.body;
    if (out.body.is_object()) {
      if (auto* e = Find(out.body.as_object(), "error"); e && e->is_object()) {
        if (auto* m = Find(e->as_object(), "message"); m && m->is_string()) msg = m->as_string();
      }
    }
    ctx.PrintError("gantry: %s (HTTP %d)\n", msg.c_str(), out.status);
    if (out.status == 401) {
      ctx.PrintError(
          "hint: pass --api-key, set GANTRY_API_KEY, or put \"apiKey\" in "
          "~/.config/gantry/config.json\n");
    }
    ctx.rc = kExitFailed;
    return std::nullopt;
  }
  return out;
}

std::optional<Reply> Peek(const Context& ctx, const std::string& path, int64_t timeout_ms) {
  Exchange x = Send(ctx, "GET", path, "", timeout_ms);
  if (x.rc != kExitOk || x.response.status >= 400) return std::nullopt;
  return Parse(x.response);
}

std::optional<Reply> Invoke(Context& ctx, const std::string& method, const std::string& path,
                            const std::string& body,
                            const std::function<void(const json::value&)>& human,
                            int64_t timeout_ms) {
  ctx.Resolve();
  auto r = Call(ctx, method, path, body, timeout_ms);
  if (!r) return std::nullopt;
  if (ctx.json)
    PrintJson(ctx.out, r->body);
  else
    human(r->body);
  return r;
}

}  // namespace gantry::cli
