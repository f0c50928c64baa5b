#pragma once
// Small string helpers shared by the image store's files (image_ref.cc, tool_output.cc,
// image_store.cc). Internal to src/agent/oci; header-only.

#include <cctype>
#include <initializer_list>
#include <string>

namespace gantry::agent::oci {

inline std::string Lower(std::string s) {
  for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

inline bool ContainsAny(const std::string& haystack, std::initializer_list<const char*> needles) {
  for (const char* n : needles) {
    if (haystack.find(n) != std::string::npos) return true;
  }
  return false;
}

inline void ReplaceAll(std::string* s, const std::string& from, const std::string& to) {
  if (from.empty()) return;
  for (size_t at = s->find(from); at != std::string::npos; at = s->find(from, at + to.size())) {
    s->replace(at, from.size(), to);
  }
}

// `s` cut to `max` bytes, with "..." after it when it was cut.
inline std::string Truncate(std::string s, size_t max) {
  if (s.size() > max) s = s.substr(0, max) + "...";
  return s;
}

}  // namespace gantry::agent::oci
