// ImageRef: parsing and normalising image references by Docker's rules. See image_ref.h for the
// contract.
#include "agent/oci/image_ref.h"

#include <arpa/inet.h>

#include <algorithm>
#include <cctype>
#include <sstream>

#include "agent/oci/image_text.h"
#include "common/env.h"

namespace gantry::agent::oci {
namespace {

bool IsLowerHex(std::string_view s) {
  return !s.empty() && std::all_of(s.begin(), s.end(), [](char c) {
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
  });
}

// A path component: [a-z0-9]+ joined by '.', '_', "__" or runs of '-'.
bool IsPathComponent(std::string_view c) {
  if (c.empty() || !std::isalnum(static_cast<unsigned char>(c.front())) ||
      !std::isalnum(static_cast<unsigned char>(c.back()))) {
    return false;
  }
  for (size_t i = 0; i < c.size(); ++i) {
    const char ch = c[i];
    if ((ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9')) continue;
    if (ch == '-') continue;
    if (ch == '.' || ch == '_') {
      const char prev = c[i - 1];
      if (prev == '.' || prev == '-') return false;
      if (prev == '_' && (ch == '.' || (i >= 2 && c[i - 2] == '_'))) return false;
      continue;
    }
    return false;
  }
  return true;
}

// A tag: [A-Za-z0-9_][A-Za-z0-9_.-]{0,127}.
bool IsTag(std::string_view t) {
  if (t.empty() || t.size() > 128 || t.front() == '.' || t.front() == '-') return false;
  return std::all_of(t.begin(), t.end(), [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '.' || c == '-';
  });
}

// host[:port], where host is a DNS name, an IPv4 address or a bracketed IPv6 address.
bool IsRegistry(std::string_view r) {
  std::string_view host = r, port;
  if (!r.empty() && r.front() == '[') {
    const size_t close = r.find(']');
    if (close == std::string_view::npos) return false;
    host = r.substr(1, close - 1);
    std::string h(host);
    in6_addr a6;
    if (inet_pton(AF_INET6, h.c_str(), &a6) != 1) return false;
    std::string_view rest = r.substr(close + 1);
    if (!rest.empty()) {
      if (rest.front() != ':') return false;
      port = rest.substr(1);
      if (port.empty()) return false;
    }
  } else {
    const size_t colon = r.find(':');
    if (colon != std::string_view::npos) {
      host = r.substr(0, colon);
      port = r.substr(colon + 1);
      if (port.empty()) return false;
    }
    if (host.empty() || host.front() == '-' || host.front() == '.' || host.back() == '.') {
      return false;
    }
    for (char c : host) {
      if (!std::isalnum(static_cast<unsigned char>(c)) && c != '-' && c != '.') return false;
    }
  }
  if (!port.empty() &&
      (port.size() > 5 ||
       !std::all_of(port.begin(), port.end(), [](char c) { return c >= '0' && c <= '9'; }) ||
       std::stoi(std::string(port)) > 65535)) {
    return false;
  }
  return true;
}
}  // namespace

bool IsDigest(std::string_view d) {
  if (d.rfind("sha256:", 0) == 0) return d.size() == 7 + 64 && IsLowerHex(d.substr(7));
  if (d.rfind("sha512:", 0) == 0) return d.size() == 7 + 128 && IsLowerHex(d.substr(7));
  return false;
}

bool IsSha256Digest(std::string_view d) {
  return d.rfind("sha256:", 0) == 0 && d.size() == 71 && IsLowerHex(d.substr(7));
}

Result<ImageRef> ImageRef::Parse(std::string_view text) {
  const std::string original(text);
  auto bad = [&](const std::string& why) {
    return InvalidArgument("image reference \"" + Truncate(original, 300) + "\": " + why);
  };
  if (text.empty()) return bad("empty");
  if (text.size() > 1024) return bad("longer than 1024 characters");
  if (text.rfind("docker://", 0) == 0) text.remove_prefix(9);
  ImageRef ref;
  if (const size_t at = text.find('@'); at != std::string_view::npos) {
    ref.digest = std::string(text.substr(at + 1));
    if (!IsDigest(ref.digest)) {
      return bad("the digest must be sha256:<64 lowercase hex> or sha512:<128 lowercase hex>");
    }
    text = text.substr(0, at);
  }
  std::string_view name = text;
  const size_t slash = text.rfind('/');
  const size_t colon = text.rfind(':');
  if (colon != std::string_view::npos && (slash == std::string_view::npos || colon > slash)) {
    ref.tag = std::string(text.substr(colon + 1));
    if (!IsTag(ref.tag)) return bad("a tag is 1-128 of [A-Za-z0-9_.-], not starting with . or -");
    name = text.substr(0, colon);
  }
  if (name.empty()) return bad("no repository");
  const size_t first = name.find('/');
  if (first != std::string_view::npos) {
    std::string_view head = name.substr(0, first);
    if (head.find_first_of(".:") != std::string_view::npos || head == "localhost" ||
        std::any_of(head.begin(), head.end(),
                    [](char c) { return std::isupper(static_cast<unsigned char>(c)); })) {
      if (!IsRegistry(head)) return bad("\"" + std::string(head) + "\" is not a registry host");
      ref.registry = std::string(head);
      name = name.substr(first + 1);
    }
  }
  if (ref.registry.empty()) ref.registry = "docker.io";
  std::stringstream ss{std::string(name)};
  std::string component;
  int components = 0;
  while (std::getline(ss, component, '/')) {
    if (!IsPathComponent(component)) {
      return bad("\"" + component +
                 "\" is not a repository name component (lowercase letters and digits, joined "
                 "by '.', '_', '__' or '-')");
    }
    ++components;
  }
  if (components == 0 || name.back() == '/') return bad("empty repository name component");
  ref.repository = std::string(name);
  if (ref.registry == "docker.io" && components == 1) ref.repository = "library/" + ref.repository;
  if (ref.tag.empty() && ref.digest.empty()) ref.tag = "latest";
  return ref;
}

std::string ImageRef::ToString() const {
  std::string s = registry + "/" + repository;
  if (!tag.empty()) s += ":" + tag;
  if (!digest.empty()) s += "@" + digest;
  return s;
}

std::string ImageRef::TransportRef() const {
  return "docker://" + registry + "/" + repository + (digest.empty() ? ":" + tag : "@" + digest);
}

std::string ImageRef::Host() const {
  if (!registry.empty() && registry.front() == '[') {
    return registry.substr(1, registry.find(']') - 1);
  }
  return registry.substr(0, registry.find(':'));
}

bool ImageRef::IsLoopback() const {
  const std::string host = Lower(Host());
  if (host == "localhost") return true;
  in_addr a4;
  if (inet_pton(AF_INET, host.c_str(), &a4) == 1) {
    return (ntohl(a4.s_addr) >> 24) == 127;
  }
  in6_addr a6;
  if (inet_pton(AF_INET6, host.c_str(), &a6) == 1) {
    if (IN6_IS_ADDR_LOOPBACK(&a6)) return true;
    if (IN6_IS_ADDR_V4MAPPED(&a6)) return a6.s6_addr[12] == 127;
  }
  return false;
}

std::string ImageRef::LayoutTag() const {
  const std::string full = ToString();
  std::string tag;
  for (char c : full) {
    if (tag.size() == 100) break;
    tag +=
        (std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '_' || c == '-') ? c : '_';
  }
  return tag + "-" + Sha256Hex(full).substr(0, 12);
}

}  // namespace gantry::agent::oci
