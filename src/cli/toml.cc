#include "cli/toml.h"

#include <cctype>
#include <cstdlib>

namespace gantry::cli {
namespace {

struct Parser {
  const std::string& s;
  size_t i = 0;
  int line = 1;

  Status Error(const std::string& what) const {
    return InvalidArgument("gantry.toml line " + std::to_string(line) + ": " + what);
  }
  void SkipSpace() {
    while (i < s.size() && (s[i] == ' ' || s[i] == '\t')) ++i;
  }
  void SkipComment() {
    SkipSpace();
    if (i < s.size() && s[i] == '#') {
      while (i < s.size() && s[i] != '\n') ++i;
    }
  }
  // Spaces, comments and newlines (inside arrays).
  void SkipAll() {
    for (;;) {
      SkipComment();
      if (i < s.size() && (s[i] == '\n' || s[i] == '\r')) {
        if (s[i] == '\n') ++line;
        ++i;
        continue;
      }
      return;
    }
  }
  bool AtLineEnd() {
    SkipComment();
    return i >= s.size() || s[i] == '\n' || s[i] == '\r';
  }
  Result<std::string> Key() {
    SkipSpace();
    if (i < s.size() && (s[i] == '"' || s[i] == '\'')) return String();
    size_t start = i;
    while (i < s.size() &&
           (isalnum(static_cast<unsigned char>(s[i])) || s[i] == '_' || s[i] == '-')) {
      ++i;
    }
    if (i == start) return Error("expected a key");
    return s.substr(start, i - start);
  }
  Result<std::string> String() {
    char q = s[i++];
    std::string out;
    while (i < s.size() && s[i] != q) {
      char c = s[i++];
      if (c == '\n') return Error("unterminated string");
      if (q == '"' && c == '\\' && i < s.size()) {
        char e = s[i++];
        switch (e) {
          case 'n':
            out += '\n';
            break;
          case 't':
            out += '\t';
            break;
          case '"':
            out += '"';
            break;
          case '\\':
            out += '\\';
            break;
          default:
            return Error(std::string("unsupported escape \\") + e);
        }
      } else {
        out += c;
      }
    }
    if (i >= s.size()) return Error("unterminated string");
    ++i;
    return out;
  }
  Result<json::value> Value() {
    SkipSpace();
    if (i >= s.size()) return Error("expected a value");
    char c = s[i];
    if (c == '"' || c == '\'') {
      auto str = String();
      if (!str.ok()) return str.status();
      return json::value(*str);
    }
    if (c == '[') {
      ++i;
      json::array arr;
      for (;;) {
        SkipAll();
        if (i < s.size() && s[i] == ']') {
          ++i;
          return json::value(std::move(arr));
        }
        auto v = Value();
        if (!v.ok()) return v.status();
        arr.push_back(std::move(*v));
        SkipAll();
        if (i < s.size() && s[i] == ',') {
          ++i;
          continue;
        }
        if (i < s.size() && s[i] == ']') continue;
        return Error("expected ',' or ']' in array");
      }
    }
    if (c == '{') return Error("inline tables are not supported; use a [table]");
    if (s.compare(i, 4, "true") == 0) {
      i += 4;
      return json::value(true);
    }
    if (s.compare(i, 5, "false") == 0) {
      i += 5;
      return json::value(false);
    }
    size_t start = i;
    while (i < s.size() && (isalnum(static_cast<unsigned char>(s[i])) || s[i] == '.' ||
                            s[i] == '-' || s[i] == '+' || s[i] == '_')) {
      ++i;
    }
    std::string num = s.substr(start, i - start);
    std::string digits;
    for (char d : num) {
      if (d != '_') digits += d;
    }
    if (digits.empty()) return Error("expected a value");
    char* end = nullptr;
    if (digits.find_first_of(".eE") == std::string::npos) {
      long long n = strtoll(digits.c_str(), &end, 10);
      if (*end == '\0') return json::value(static_cast<int64_t>(n));
    } else {
      double d = strtod(digits.c_str(), &end);
      if (*end == '\0') return json::value(d);
    }
    return Error("not a value TOML allows here: " + num);
  }
};

}  // namespace

Result<json::object> ParseToml(const std::string& text) {
  Parser p{text};
  json::object root;
  json::object* table = &root;
  for (;;) {
    p.SkipAll();
    if (p.i >= text.size()) break;
    if (text[p.i] == '[') {
      ++p.i;
      if (p.i < text.size() && text[p.i] == '[')
        return p.Error("arrays of tables are not supported");
      table = &root;
      for (;;) {
        auto k = p.Key();
        if (!k.ok()) return k.status();
        json::value& v = (*table)[*k];
        if (v.is_null()) v = json::object();
        if (!v.is_object()) return p.Error("'" + *k + "' is already a value, not a table");
        table = &v.as_object();
        p.SkipSpace();
        if (p.i < text.size() && text[p.i] == '.') {
          ++p.i;
          continue;
        }
        break;
      }
      if (p.i >= text.size() || text[p.i] != ']') return p.Error("expected ']'");
      ++p.i;
      if (!p.AtLineEnd()) return p.Error("unexpected text after the table header");
      continue;
    }
    auto key = p.Key();
    if (!key.ok()) return key.status();
    p.SkipSpace();
    if (p.i >= text.size() || text[p.i] != '=') return p.Error("expected '=' after " + *key);
    ++p.i;
    auto v = p.Value();
    if (!v.ok()) return v.status();
    if (table->contains(*key)) return p.Error("duplicate key " + *key);
    (*table)[*key] = std::move(*v);
    if (!p.AtLineEnd()) return p.Error("unexpected text after the value of " + *key);
  }
  return root;
}

}  // namespace gantry::cli
