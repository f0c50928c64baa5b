#include "cli/client.h"

#include <vector>

#include "cli/format.h"
#include "http/http.h"

namespace gantry::cli {

std::optional<Reply> Call(const Context& ctx, const std::string& method, const std::string& path,
                          const std::string& body, int64_t timeout_ms, int expected_error) {
  auto url = http::ParseUrl(ctx.url + path);
  if (!url.ok()) {
    ctx.PrintError("gantry: bad server URL %s: %s\n", ctx.url.c_str(),
                   url.status().message().c_str());
    return std::nullopt;
  }
  http::HttpClient client(url->host, url->port);
  std::vector<http::Header> headers;
  if (!ctx.api_key.empty()) headers.push_back({"Authorization", "Bearer " + ctx.api_key});
  auto r = client.Do(method, url->target, body, headers, timeout_ms);
  if (!r.ok()) {
    ctx.PrintError("gantry: cannot reach the server at %s: %s\n", ctx.url.c_str(),
                   r.status().message().c_str());
    return std::nullopt;
  }
  Reply out{r->status, nullptr};
  if (!r->body.empty()) {
    auto v = ParseJson(r->body);
    out.body = v.ok() ? *v : json::value(r->body);
  }
  if (r->status >= 400 && r->status != expected_error) {
    std::string msg = r->body;
    if (out.body.is_object()) {
      if (auto* e = Find(out.body.as_object(), "error"); e && e->is_object()) {
        if (auto* m = Find(e->as_object(), "message"); m && m->is_string()) msg = m->as_string();
      }
    }
    ctx.PrintError("gantry: %s (HTTP %d)\n", msg.c_str(), r->status);
    if (r->status == 401) {
      ctx.PrintError(
          "hint: pass --api-key, set GANTRY_API_KEY, or put \"apiKey\" in "
          "~/.config/gantry/config.json\n");
    }
    return std::nullopt;
  }
  return out;
}

std::optional<Reply> Invoke(Context& ctx, const std::string& method, const std::string& path,
                            const std::string& body,
                            const std::function<void(const json::value&)>& human,
                            int64_t timeout_ms) {
  ctx.Resolve();
  auto r = Call(ctx, method, path, body, timeout_ms);
  if (!r) {
    ctx.rc = 1;
    return std::nullopt;
  }
  if (ctx.json)
    PrintJson(ctx.out, r->body);
  else
    human(r->body);
  return r;
}

}  // namespace gantry::cli
