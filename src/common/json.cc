#include "common/json.h"

#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>
#include <boost/json/string.hpp>
#include <cmath>

namespace gantry {

Result<json::value> ParseJson(std::string_view text) {
  boost::system::error_code ec;
  json::value v = json::parse(json::string_view(text.data(), text.size()), ec);
  if (ec) return InvalidArgument("malformed JSON: " + ec.message());
  return v;
}

std::string ToJson(const json::value& v) { return json::serialize(v); }

std::string JsonQuote(std::string_view s) {
  return json::serialize(json::string(json::string_view(s.data(), s.size())));
}

std::optional<int64_t> AsInt(const json::value& v) {
  if (v.is_int64()) return v.get_int64();
  if (v.is_uint64() && v.get_uint64() <= static_cast<uint64_t>(INT64_MAX)) {
    return static_cast<int64_t>(v.get_uint64());
  }
  if (v.is_double()) {
    double d = v.get_double();
    if (std::isfinite(d) && d == std::floor(d) && std::fabs(d) < 9e18) {
      return static_cast<int64_t>(d);
    }
  }
  return std::nullopt;
}

json::object StringMapJson(const std::map<std::string, std::string>& m) {
  json::object o;
  for (const auto& [k, v] : m) o[k] = v;
  return o;
}

const json::value* Find(const json::object& obj, std::string_view key) {
  auto it = obj.find(json::string_view(key.data(), key.size()));
  return it == obj.end() ? nullptr : &it->value();
}

}  // namespace gantry
