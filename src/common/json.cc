#include "common/json.h"

#include <algorithm>
#include <array>
#include <boost/json/basic_parser_impl.hpp>
#include <boost/json/parse.hpp>
#include <boost/json/string.hpp>
#include <cctype>
#include <charconv>
#include <cmath>
#include <cstring>
#include <vector>

namespace gantry {
namespace {

// --- Writing -------------------------------------------------------------------------------

// Per byte: 0 when a string holds it as it is, else the letter after its backslash ('u' for
// \u00XX). The same escapes as Boost.JSON's serializer.
constexpr std::array<char, 256> kEscapes = [] {
  std::array<char, 256> t{};
  for (int c = 0; c < 0x20; ++c) t[c] = 'u';
  t['\b'] = 'b';
  t['\t'] = 't';
  t['\n'] = 'n';
  t['\f'] = 'f';
  t['\r'] = 'r';
  t['"'] = '"';
  t['\\'] = '\\';
  return t;
}();

// Room for `n` more bytes in `out`, growing it geometrically (a bare reserve(size + n) would
// reallocate on every call).
void MakeRoom(std::string& out, size_t n) {
  if (out.capacity() - out.size() < n) out.reserve(std::max(out.capacity() * 2, out.size() + n));
}

void AppendQuoted(std::string& out, std::string_view s) {
  static constexpr char kHex[] = "0123456789abcdef";
  MakeRoom(out, s.size() + 2);
  out.push_back('"');
  size_t run = 0;  // the first byte not appended yet
  for (size_t i = 0; i < s.size(); ++i) {
    const auto c = static_cast<unsigned char>(s[i]);
    const char e = kEscapes[c];
    if (e == 0) continue;
    out.append(s.data() + run, i - run);
    if (e == 'u') {
      const char u[6] = {'\\', 'u', '0', '0', kHex[c >> 4], kHex[c & 15]};
      out.append(u, 6);
    } else {
      const char b[2] = {'\\', e};
      out.append(b, 2);
    }
    run = i + 1;
  }
  out.append(s.data() + run, s.size() - run);
  out.push_back('"');
}

template <typename Int>
void AppendInt(std::string& out, Int n) {
  char buf[24];
  auto r = std::to_chars(buf, buf + sizeof buf, n);
  out.append(buf, r.ptr - buf);
}

// --- Checking ------------------------------------------------------------------------------

bool HasNonFinite(const json::value& v) {
  switch (v.kind()) {
    case json::kind::double_:
      return !std::isfinite(v.get_double());
    case json::kind::array:
      for (const auto& e : v.get_array()) {
        if (HasNonFinite(e)) return true;
      }
      return false;
    case json::kind::object:
      for (const auto& kv : v.get_object()) {
        if (HasNonFinite(kv.value())) return true;
      }
      return false;
    default:
      return false;
  }
}

// A key that a path writes after a dot: a letter or '_', then letters, digits and '_'.
bool IsPlainName(std::string_view key) {
  if (key.empty() || std::isdigit(static_cast<unsigned char>(key[0]))) return false;
  for (char c : key) {
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '_') return false;
  }
  return true;
}

void AppendPathKey(std::string& path, std::string_view key) {
  if (IsPlainName(key)) {
    if (!path.empty()) path += '.';
    path += key;
  } else {
    path += '[';
    AppendQuoted(path, key);
    path += ']';
  }
}

void AppendPathIndex(std::string& path, size_t i) {
  path += '[';
  AppendInt(path, i);
  path += ']';
}

// Extends `path` to the first non-finite number in `v` and returns it; nullptr when none.
const json::value* FindNonFinite(const json::value& v, std::string& path) {
  if (v.is_double()) return std::isfinite(v.get_double()) ? nullptr : &v;
  const size_t mark = path.size();
  if (v.is_array()) {
    const json::array& a = v.get_array();
    for (size_t i = 0; i < a.size(); ++i) {
      AppendPathIndex(path, i);
      if (const json::value* f = FindNonFinite(a[i], path)) return f;
      path.resize(mark);
    }
  } else if (v.is_object()) {
    for (const auto& kv : v.get_object()) {
      AppendPathKey(path, std::string_view(kv.key().data(), kv.key().size()));
      if (const json::value* f = FindNonFinite(kv.value(), path)) return f;
      path.resize(mark);
    }
  }
  return nullptr;
}

Status NotFinite(std::string_view path, std::string_view why) {
  std::string msg = path.empty() ? "the value" : std::string(path);
  msg += " is not a finite number: ";
  msg += why;
  return InvalidArgument(std::move(msg));
}

// --- Naming where a parse failed -----------------------------------------------------------

// A basic_parser handler that builds nothing and follows where the parse is, so that a failure
// can be named by the path of the value it was in.
struct PathTracker {
  static constexpr std::size_t max_object_size = std::size_t(-1);
  static constexpr std::size_t max_array_size = std::size_t(-1);
  static constexpr std::size_t max_key_size = std::size_t(-1);
  static constexpr std::size_t max_string_size = std::size_t(-1);
  using ec = boost::system::error_code;
  using sv = json::string_view;

  struct Frame {
    bool array = false;
    size_t index = 0;       // an array's: the element being read
    std::string key;        // an object's: the last key
    bool in_value = false;  // an object's: its value (not a key) is being read
  };
  std::vector<Frame> frames;
  std::string key_part;

  bool Begin(bool array) {
    frames.push_back(Frame{array});
    return true;
  }
  bool ValueDone() {
    if (frames.empty()) return true;
    Frame& f = frames.back();
    if (f.array) ++f.index;
    f.in_value = false;
    return true;
  }
  bool End() {
    frames.pop_back();
    return ValueDone();
  }
  bool on_document_begin(ec&) { return true; }
  bool on_document_end(ec&) { return true; }
  bool on_object_begin(ec&) { return Begin(false); }
  bool on_object_end(std::size_t, ec&) { return End(); }
  bool on_array_begin(ec&) { return Begin(true); }
  bool on_array_end(std::size_t, ec&) { return End(); }
  bool on_key_part(sv s, std::size_t, ec&) {
    key_part.append(s.data(), s.size());
    return true;
  }
  bool on_key(sv s, std::size_t, ec&) {
    Frame& f = frames.back();
    f.key = std::move(key_part.append(s.data(), s.size()));
    key_part.clear();
    f.in_value = true;
    return true;
  }
  bool on_string_part(sv, std::size_t, ec&) { return true; }
  bool on_string(sv, std::size_t, ec&) { return ValueDone(); }
  bool on_number_part(sv, ec&) { return true; }
  bool on_int64(std::int64_t, sv, ec&) { return ValueDone(); }
  bool on_uint64(std::uint64_t, sv, ec&) { return ValueDone(); }
  bool on_double(double, sv, ec&) { return ValueDone(); }
  bool on_bool(bool, ec&) { return ValueDone(); }
  bool on_null(ec&) { return ValueDone(); }
  bool on_comment_part(sv, ec&) { return true; }
  bool on_comment(sv, ec&) { return true; }

  // The path of the value being read; false when the parse is at an object's key.
  bool ValuePath(std::string* path) const {
    if (!frames.empty() && !frames.back().array && !frames.back().in_value) return false;
    for (const Frame& f : frames) {
      if (f.array) {
        AppendPathIndex(*path, f.index);
      } else {
        AppendPathKey(*path, f.key);
      }
    }
    return true;
  }
};

// When `text` fails to parse at a NaN, Infinity or -Infinity where a value belongs, the error
// naming that value; OK otherwise.
Status NonFiniteToken(std::string_view text) {
  json::basic_parser<PathTracker> p(json::parse_options{});
  boost::system::error_code ec;
  const size_t at = p.write_some(false, text.data(), text.size(), ec);
  if (!ec || at > text.size()) return Status::Ok();
  const std::string_view rest = text.substr(at);
  size_t start = at;
  const char* token = nullptr;
  if (rest.starts_with("NaN")) {
    token = "NaN";
  } else if (rest.starts_with("Infinity")) {
    token = "Infinity";
    if (at > 0 && text[at - 1] == '-') start = at - 1;  // the parser took the '-'
  } else {
    return Status::Ok();
  }
  while (start > 0 && std::strchr(" \t\r\n", text[start - 1]) != nullptr) --start;
  if (start > 0 && std::strchr("[,:", text[start - 1]) == nullptr) return Status::Ok();
  std::string path;
  if (!p.handler().ValuePath(&path)) return Status::Ok();
  return NotFinite(path, std::string("JSON has no ") + token);
}

}  // namespace

Result<json::value> ParseJson(std::string_view text) {
  boost::system::error_code ec;
  json::value v = json::parse(json::string_view(text.data(), text.size()), ec);
  if (ec) {
    if (Status named = NonFiniteToken(text); !named.ok()) return named;
    return InvalidArgument("malformed JSON: " + ec.message());
  }
  return v;
}

void AppendJsonDouble(std::string& out, double d) {
  if (!std::isfinite(d)) {
    out += "null";
    return;
  }
  // The shortest digits that read back as `d`, as [-]D[.DDD]e(+|-)XX[X]: Python's repr with an
  // exponent, which is what it writes for a magnitude of 1e16 up or under 1e-4.
  char sci[32];
  const char* end = std::to_chars(sci, sci + sizeof sci, d, std::chars_format::scientific).ptr;
  const char* e = static_cast<const char*>(std::memchr(sci, 'e', end - sci));
  int exp = 0;
  std::from_chars(e + (e[1] == '+' ? 2 : 1), end, exp);
  const int point = exp + 1;  // where the decimal point goes, counted from the first digit
  if (point <= -4 || point > 16) {
    out.append(sci, end - sci);
    return;
  }
  const char* p = sci;
  if (*p == '-') out.push_back(*p++);
  char digits[20];
  int n = 0;
  for (; p < e; ++p) {
    if (*p != '.') digits[n++] = *p;
  }
  if (point <= 0) {  // 0.000DDD
    out += "0.";
    out.append(-point, '0');
    out.append(digits, n);
  } else if (point < n) {  // DD.DDD
    out.append(digits, point);
    out.push_back('.');
    out.append(digits + point, n - point);
  } else {  // DDD00.0
    out.append(digits, n);
    out.append(point - n, '0');
    out += ".0";
  }
}

void AppendJson(std::string& out, const json::value& v) {
  switch (v.kind()) {
    case json::kind::null:
      out += "null";
      return;
    case json::kind::bool_:
      out += v.get_bool() ? "true" : "false";
      return;
    case json::kind::int64:
      return AppendInt(out, v.get_int64());
    case json::kind::uint64:
      return AppendInt(out, v.get_uint64());
    case json::kind::double_:
      return AppendJsonDouble(out, v.get_double());
    case json::kind::string:
      return AppendQuoted(out, std::string_view(v.get_string().data(), v.get_string().size()));
    case json::kind::array: {
      out.push_back('[');
      bool first = true;
      for (const auto& e : v.get_array()) {
        if (!first) out.push_back(',');
        first = false;
        AppendJson(out, e);
      }
      out.push_back(']');
      return;
    }
    case json::kind::object: {
      out.push_back('{');
      bool first = true;
      for (const auto& kv : v.get_object()) {
        if (!first) out.push_back(',');
        first = false;
        AppendQuoted(out, std::string_view(kv.key().data(), kv.key().size()));
        out.push_back(':');
        AppendJson(out, kv.value());
      }
      out.push_back('}');
      return;
    }
  }
}

std::string ToJson(const json::value& v) {
  std::string out;
  out.reserve(128);
  AppendJson(out, v);
  return out;
}

Result<json::value> ParseFiniteJson(std::string_view text) {
  auto v = ParseJson(text);
  if (!v.ok()) return v.status();
  GANTRY_RETURN_IF_ERROR(CheckFinite(*v, ""));
  return v;
}

Status CheckFinite(const json::value& v, std::string_view path) {
  if (!HasNonFinite(v)) return Status::Ok();  // the common case builds no path
  std::string where(path);
  const json::value* f = FindNonFinite(v, where);
  return NotFinite(where, std::isnan(f->get_double()) ? "JSON has no NaN"
                                                      : "it is too large for a double (1e400 is)");
}

std::string JsonQuote(std::string_view s) {
  std::string out;
  out.reserve(s.size() + 2);
  AppendQuoted(out, s);
  return out;
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
