#pragma once
// Which network addresses an outgoing request made for someone else (a webhook) may reach.
// A client chooses a webhook's URL, so without a policy it could make the server call its own
// loopback services, the cloud's metadata address (169.254.169.254) or the private network:
// addresses that are not on the public internet are refused unless an allow-list names them.
// The check runs on every address a name resolves to, at connect time, so a name that resolves
// to a private address is refused as a literal one is.

#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"

namespace gantry::http {

// An IPv4 or IPv6 prefix, e.g. 10.0.0.0/8 or fd00::/8.
struct Cidr {
  unsigned char addr[16] = {};  // IPv4 as an IPv4-mapped IPv6 address (::ffff:a.b.c.d)
  int prefix_len = 0;           // over the 128 bits
};
// Parses "ADDRESS/LEN" or a bare address (a /32 or /128). InvalidArgument otherwise.
Result<Cidr> ParseCidr(std::string_view text);

class AddressPolicy {
 public:
  // Public addresses only, plus `allowed`.
  explicit AddressPolicy(std::vector<Cidr> allowed = {}) : allowed_(std::move(allowed)) {}
  // OK when `ip` (text: "1.2.3.4", "::1") may be reached; PermissionDenied naming the kind of
  // address ("127.0.0.1 is a loopback address") otherwise, or for text that is no address.
  Status Check(std::string_view ip) const;

 private:
  std::vector<Cidr> allowed_;
};

}  // namespace gantry::http
