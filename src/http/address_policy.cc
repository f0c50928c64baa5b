#include "http/address_policy.h"

#include <arpa/inet.h>

#include <cstring>

namespace gantry::http {
namespace {

// `text` as 16 bytes (IPv4 mapped into IPv6); false when it is no address.
bool ParseAddress(std::string_view text, unsigned char out[16]) {
  std::string s(text);
  in_addr v4;
  if (inet_pton(AF_INET, s.c_str(), &v4) == 1) {
    memset(out, 0, 10);
    out[10] = out[11] = 0xff;
    memcpy(out + 12, &v4, 4);
    return true;
  }
  in6_addr v6;
  if (inet_pton(AF_INET6, s.c_str(), &v6) == 1) {
    memcpy(out, &v6, 16);
    return true;
  }
  return false;
}

bool InPrefix(const unsigned char a[16], const unsigned char p[16], int len) {
  for (int i = 0; i < 16 && len > 0; ++i, len -= 8) {
    const unsigned char mask = len >= 8 ? 0xff : static_cast<unsigned char>(0xff << (8 - len));
    if ((a[i] & mask) != (p[i] & mask)) return false;
  }
  return true;
}

struct Range {
  const char* prefix;
  int len;  // over 128 bits (an IPv4 /8 is 96 + 8)
  const char* kind;
};

// Addresses that are not on the public internet (IANA special-purpose registries).
constexpr Range kRefusedText[] = {
    {"::ffff:0.0.0.0", 96 + 8, "a 'this network' address"},
    {"::ffff:10.0.0.0", 96 + 8, "a private address"},
    {"::ffff:100.64.0.0", 96 + 10, "a shared (carrier-grade NAT) address"},
    {"::ffff:127.0.0.0", 96 + 8, "a loopback address"},
    {"::ffff:169.254.0.0", 96 + 16, "a link-local address (cloud metadata lives here)"},
    {"::ffff:172.16.0.0", 96 + 12, "a private address"},
    {"::ffff:192.0.0.0", 96 + 24, "an IETF protocol address"},
    {"::ffff:192.168.0.0", 96 + 16, "a private address"},
    {"::ffff:198.18.0.0", 96 + 15, "a benchmarking address"},
    {"::ffff:224.0.0.0", 96 + 4, "a multicast address"},
    {"::ffff:240.0.0.0", 96 + 4, "a reserved address"},
    {"::", 128, "the unspecified address"},
    {"::1", 128, "a loopback address"},
    {"fc00::", 7, "a private (unique local) address"},
    {"fe80::", 10, "a link-local address"},
    {"ff00::", 8, "a multicast address"},
};

struct Refused {
  Cidr cidr;
  const char* kind;
};

// kRefusedText parsed, once.
const std::vector<Refused>& RefusedRanges() {
  static const std::vector<Refused> ranges = [] {
    std::vector<Refused> out;
    for (const Range& r : kRefusedText) {
      Refused x{{}, r.kind};
      ParseAddress(r.prefix, x.cidr.addr);
      x.cidr.prefix_len = r.len;
      out.push_back(x);
    }
    return out;
  }();
  return ranges;
}

}  // namespace

Result<Cidr> ParseCidr(std::string_view text) {
  Cidr c;
  std::string_view addr = text;
  int len = -1;
  if (size_t slash = text.find('/'); slash != std::string_view::npos) {
    addr = text.substr(0, slash);
    std::string n(text.substr(slash + 1));
    char* end = nullptr;
    long v = n.empty() ? -1 : strtol(n.c_str(), &end, 10);
    if (n.empty() || *end != '\0' || v < 0) {
      return InvalidArgument("not an address/prefix-length: " + std::string(text));
    }
    len = static_cast<int>(v);
  }
  if (!ParseAddress(addr, c.addr)) return InvalidArgument("not an address: " + std::string(text));
  const bool v4 = addr.find(':') == std::string_view::npos;
  const int max = v4 ? 32 : 128;
  if (len > max)
    return InvalidArgument("prefix length over " + std::to_string(max) + ": " + std::string(text));
  c.prefix_len = (len < 0 ? max : len) + (v4 ? 96 : 0);
  return c;
}

Status AddressPolicy::Check(std::string_view ip) const {
  unsigned char a[16];
  if (!ParseAddress(ip, a)) return PermissionDenied("not an address: " + std::string(ip));
  for (const Cidr& c : allowed_) {
    if (InPrefix(a, c.addr, c.prefix_len)) return Status::Ok();
  }
  // NAT64 (64:ff9b::/96) carries an IPv4 address: judge that one.
  static const Cidr kNat64 = *ParseCidr("64:ff9b::/96");
  if (InPrefix(a, kNat64.addr, kNat64.prefix_len)) {
    unsigned char mapped[16] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    memcpy(mapped + 12, a + 12, 4);
    memcpy(a, mapped, 16);
  }
  for (const Refused& r : RefusedRanges()) {
    if (InPrefix(a, r.cidr.addr, r.cidr.prefix_len)) {
      return PermissionDenied(std::string(ip) + " is " + r.kind);
    }
  }
  return Status::Ok();
}

}  // namespace gantry::http
