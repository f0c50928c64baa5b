#include "cli/toml.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <utility>
#include <vector>

// toml++ is compiled in this translation unit and no other: header-only (Debian's package also
// ships it as a shared library, which the gantry binary then need not load), parse errors as
// values rather than exceptions, and without the formatters, which only write TOML.
#define TOML_HEADER_ONLY 1
#define TOML_EXCEPTIONS 0
#define TOML_ENABLE_FORMATTERS 0
#include <toml++/toml.h>

namespace gantry::cli {
namespace {

Status ErrorAt(const toml::source_region& where, std::string_view what) {
  return InvalidArgument("gantry.toml line " + std::to_string(where.begin.line) + ", column " +
                         std::to_string(where.begin.column) + ": " + std::string(what));
}

std::string DateText(const toml::date& d) {
  char buf[16];
  snprintf(buf, sizeof buf, "%04u-%02u-%02u", unsigned{d.year}, unsigned{d.month}, unsigned{d.day});
  return buf;
}

// HH:MM:SS, then the fraction of a second without trailing zeros, if any.
std::string TimeText(const toml::time& t) {
  char buf[32];
  snprintf(buf, sizeof buf, "%02u:%02u:%02u", unsigned{t.hour}, unsigned{t.minute},
           unsigned{t.second});
  std::string s = buf;
  if (t.nanosecond != 0) {
    snprintf(buf, sizeof buf, ".%09u", unsigned{t.nanosecond});
    std::string frac = buf;
    while (frac.back() == '0') frac.pop_back();
    s += frac;
  }
  return s;
}

std::string DateTimeText(const toml::date_time& dt) {
  std::string s = DateText(dt.date) + "T" + TimeText(dt.time);
  if (!dt.offset) return s;  // a local date-time
  const int minutes = dt.offset->minutes;
  if (minutes == 0) return s + "Z";
  char buf[16];
  snprintf(buf, sizeof buf, "%c%02d:%02d", minutes < 0 ? '-' : '+', std::abs(minutes) / 60,
           std::abs(minutes) % 60);
  return s + buf;
}

Result<json::value> ToJsonValue(const toml::node& n);

// toml++ keeps a table's keys sorted; the spec keeps them in the order of the text.
Result<json::object> ToJsonObject(const toml::table& t) {
  std::vector<std::pair<const toml::key*, const toml::node*>> entries;
  for (const auto& [k, v] : t) entries.emplace_back(&k, &v);
  std::stable_sort(entries.begin(), entries.end(), [](const auto& a, const auto& b) {
    const toml::source_position& pa = a.first->source().begin;
    const toml::source_position& pb = b.first->source().begin;
    return std::pair(pa.line, pa.column) < std::pair(pb.line, pb.column);
  });
  json::object out;
  for (const auto& [k, v] : entries) {
    auto j = ToJsonValue(*v);
    if (!j.ok()) return j.status();
    out[k->str()] = std::move(*j);
  }
  return out;
}

Result<json::value> ToJsonValue(const toml::node& n) {
  switch (n.type()) {
    case toml::node_type::table: {
      auto o = ToJsonObject(*n.as_table());
      if (!o.ok()) return o.status();
      return json::value(std::move(*o));
    }
    case toml::node_type::array: {
      json::array a;
      for (const toml::node& e : *n.as_array()) {
        auto j = ToJsonValue(e);
        if (!j.ok()) return j.status();
        a.push_back(std::move(*j));
      }
      return json::value(std::move(a));
    }
    case toml::node_type::string:
      return json::value(n.as_string()->get());
    case toml::node_type::integer:
      return json::value(n.as_integer()->get());
    case toml::node_type::floating_point: {
      const double d = n.as_floating_point()->get();
      if (!std::isfinite(d)) return ErrorAt(n.source(), "JSON has no inf or nan");
      return json::value(d);
    }
    case toml::node_type::boolean:
      return json::value(n.as_boolean()->get());
    case toml::node_type::date:
      return json::value(DateText(n.as_date()->get()));
    case toml::node_type::time:
      return json::value(TimeText(n.as_time()->get()));
    case toml::node_type::date_time:
      return json::value(DateTimeText(n.as_date_time()->get()));
    case toml::node_type::none:
      break;
  }
  return ErrorAt(n.source(), "a value of no TOML type");
}

}  // namespace

Result<json::object> ParseToml(const std::string& text) {
  toml::parse_result parsed = toml::parse(text);
  if (!parsed) return ErrorAt(parsed.error().source(), parsed.error().description());
  return ToJsonObject(parsed.table());
}

}  // namespace gantry::cli
