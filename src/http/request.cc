// Boost-free parts of the HTTP module: request accessors, URL and percent coding.
#include <strings.h>

#include "http/http.h"

namespace gantry::http {

std::string_view Request::path() const {
  std::string_view t = target;
  size_t q = t.find('?');
  return q == std::string_view::npos ? t : t.substr(0, q);
}

std::string_view Request::query() const {
  std::string_view t = target;
  size_t q = t.find('?');
  return q == std::string_view::npos ? std::string_view() : t.substr(q + 1);
}

std::string_view Request::header(std::string_view name) const {
  for (const auto& h : headers) {
    if (h.name.size() == name.size() && strncasecmp(h.name.data(), name.data(), name.size()) == 0) {
      return h.value;
    }
  }
  return {};
}

std::optional<std::string> Request::param(std::string_view key) const {
  std::string_view q = query();
  while (!q.empty()) {
    size_t amp = q.find('&');
    std::string_view pair = q.substr(0, amp);
    size_t eq = pair.find('=');
    std::string_view k = pair.substr(0, eq);
    if (k == key) {
      return eq == std::string_view::npos ? std::string() : PercentDecode(pair.substr(eq + 1));
    }
    if (amp == std::string_view::npos) break;
    q.remove_prefix(amp + 1);
  }
  return std::nullopt;
}

static int HexVal(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

std::string PercentDecode(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '%' && i + 2 < s.size() && HexVal(s[i + 1]) >= 0 && HexVal(s[i + 2]) >= 0) {
      out.push_back(static_cast<char>(HexVal(s[i + 1]) * 16 + HexVal(s[i + 2])));
      i += 2;
    } else if (s[i] == '+') {
      out.push_back(' ');
    } else {
      out.push_back(s[i]);
    }
  }
  return out;
}

std::string PercentEncode(std::string_view s) {
  static const char* kHex = "0123456789ABCDEF";
  std::string out;
  for (unsigned char c : s) {
    if (isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~') {
      out.push_back(static_cast<char>(c));
    } else {
      out.push_back('%');
      out.push_back(kHex[c >> 4]);
      out.push_back(kHex[c & 15]);
    }
  }
  return out;
}

Result<Url> ParseUrl(std::string_view url) {
  constexpr std::string_view kHttp = "http://", kHttps = "https://";
  Url out;
  if (url.starts_with(kHttps)) {
    out.tls = true;
    out.port = 443;
    url.remove_prefix(kHttps.size());
  } else if (url.starts_with(kHttp)) {
    url.remove_prefix(kHttp.size());
  } else {
    return InvalidArgument("only http:// and https:// URLs are supported: " + std::string(url));
  }
  size_t slash = url.find_first_of("/?");
  std::string_view authority = url.substr(0, slash);
  out.target = slash == std::string_view::npos ? "/" : std::string(url.substr(slash));
  if (!out.target.empty() && out.target[0] == '?') out.target = "/" + out.target;
  if (authority.find('@') != std::string_view::npos) {
    return InvalidArgument("credentials in URLs are not supported");
  }
  std::string_view bracketed;  // an IPv6 address, "[::1]" in a URL, kept without brackets
  if (!authority.empty() && authority.front() == '[') {
    size_t close = authority.find(']');
    if (close == std::string_view::npos) return InvalidArgument("unclosed [ in URL");
    bracketed = authority.substr(1, close - 1);
    authority.remove_prefix(close + 1);  // "" or ":PORT"
    if (!authority.empty() && authority.front() != ':') return InvalidArgument("bad URL host");
    if (bracketed.empty()) return InvalidArgument("URL has no host");
  }
  size_t colon = authority.rfind(':');
  if (colon != std::string_view::npos) {
    std::string port(authority.substr(colon + 1));
    char* end = nullptr;
    long p = strtol(port.c_str(), &end, 10);
    if (port.empty() || *end != '\0' || p <= 0 || p > 65535) {
      return InvalidArgument("bad port in URL");
    }
    out.port = static_cast<uint16_t>(p);
    authority = authority.substr(0, colon);
  }
  if (!bracketed.empty()) {
    out.host = std::string(bracketed);
    return out;
  }
  if (authority.empty()) return InvalidArgument("URL has no host");
  out.host = std::string(authority);
  return out;
}

}  // namespace gantry::http
