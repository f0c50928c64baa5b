#include "cli/format.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <ctime>

namespace gantry::cli {

std::string Str(const json::value& v) {
  if (v.is_string()) return std::string(v.as_string());
  if (v.is_null()) return "";
  if (v.is_double()) {
    const double d = v.as_double();
    if (std::floor(d) == d && std::fabs(d) < 1e15) return std::to_string(static_cast<int64_t>(d));
    char buf[32];
    snprintf(buf, sizeof buf, "%.6g", d);
    return buf;
  }
  return ToJson(v);
}

std::string Field(const json::value& obj, const char* key) {
  if (!obj.is_object()) return "";
  const json::value* v = Find(obj.as_object(), key);
  return v ? Str(*v) : "";
}

std::string Ms(const json::value& v) { return v.is_null() ? "-" : Str(v); }

std::string UtcTime(const json::value& ms) {
  std::optional<int64_t> n = AsInt(ms);
  if (!n || *n <= 0) return "-";
  const time_t secs = static_cast<time_t>(*n / 1000);
  struct tm t;
  if (!gmtime_r(&secs, &t)) return "-";
  char buf[32];
  strftime(buf, sizeof buf, "%Y-%m-%d %H:%M:%S", &t);
  return buf;
}

void PrintTable(std::ostream& out, const std::vector<std::string>& header,
                const std::vector<std::vector<std::string>>& rows) {
  std::vector<size_t> w(header.size());
  for (size_t i = 0; i < header.size(); ++i) w[i] = header[i].size();
  for (const auto& r : rows) {
    for (size_t i = 0; i < r.size() && i < w.size(); ++i) w[i] = std::max(w[i], r[i].size());
  }
  auto line = [&](const std::vector<std::string>& r) {
    std::string s;
    for (size_t i = 0; i < r.size(); ++i) {
      s += r[i];
      if (i + 1 < r.size()) s += std::string(w[i] - r[i].size() + 2, ' ');
    }
    out << s << '\n';
  };
  line(header);
  for (const auto& r : rows) line(r);
}

void PrintJson(std::ostream& out, const json::value& v) { out << ToJson(v) << '\n'; }

}  // namespace gantry::cli
