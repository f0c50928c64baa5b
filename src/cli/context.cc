#include "cli/context.h"

#include <cctype>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "common/json.h"

namespace gantry::cli {
namespace {

namespace fs = std::filesystem;

std::string Trim(std::string s) {
  while (!s.empty() && isspace(static_cast<unsigned char>(s.back()))) s.pop_back();
  size_t i = 0;
  while (i < s.size() && isspace(static_cast<unsigned char>(s[i]))) ++i;
  return s.substr(i);
}

std::string Format(const char* format, va_list args) {
  va_list copy;
  va_copy(copy, args);
  const int n = vsnprintf(nullptr, 0, format, copy);
  va_end(copy);
  if (n <= 0) return "";
  std::string s(static_cast<size_t>(n) + 1, '\0');
  vsnprintf(s.data(), s.size(), format, args);
  s.pop_back();
  return s;
}

}  // namespace

std::string ReadFile(const std::string& path) {
  std::ifstream f(path);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

void Context::Resolve() {
  std::string cfg_path;
  if (const char* p = getenv("GANTRY_CONFIG"))
    cfg_path = p;
  else if (const char* h = getenv("HOME"))
    cfg_path = std::string(h) + "/.config/gantry/config.json";
  json::object cfg;
  if (!cfg_path.empty() && fs::exists(cfg_path)) {
    auto v = ParseJson(ReadFile(cfg_path));
    if (v.ok() && v->is_object())
      cfg = v->as_object();
    else
      PrintError("gantry: ignoring unreadable config file %s\n", cfg_path.c_str());
  }
  auto from_cfg = [&](const char* k) -> std::string {
    const json::value* v = Find(cfg, k);
    return v && v->is_string() ? std::string(v->as_string()) : "";
  };
  if (url.empty()) url = getenv("GANTRY_URL") ? getenv("GANTRY_URL") : from_cfg("url");
  if (url.empty()) url = "http://127.0.0.1:8000";
  while (!url.empty() && url.back() == '/') url.pop_back();
  if (api_key.empty())
    api_key = getenv("GANTRY_API_KEY") ? getenv("GANTRY_API_KEY") : from_cfg("apiKey");
  if (api_key.empty()) {
    const char* d = getenv("GANTRY_DATA_DIR");
    std::string dir = d && *d ? d : "gantry-data";
    std::string path = dir + "/admin.key";
    if (fs::exists(path)) api_key = Trim(ReadFile(path));
  }
}

void Context::Print(const char* format, ...) const {
  va_list args;
  va_start(args, format);
  out << Format(format, args);
  va_end(args);
}

void Context::PrintError(const char* format, ...) const {
  va_list args;
  va_start(args, format);
  err << Format(format, args);
  va_end(args);
}

}  // namespace gantry::cli
