// The real measures of HostProbe (declared in template_manager.h): /proc and statvfs().
#include <sys/statvfs.h>

#include <cstdint>
#include <fstream>
#include <optional>
#include <string>

#include "agent/template/template_manager.h"

namespace gantry::agent {
namespace {

// The number after `field` ("MemAvailable:", "Pss:") in a /proc file of "Name: N kB" lines.
std::optional<int64_t> KbField(const std::string& path, const std::string& field) {
  std::ifstream in(path);
  std::string name;
  int64_t kb = 0;
  while (in >> name) {
    if (name == field) {
      in >> kb;
      return kb;
    }
    in.ignore(1 << 16, '\n');
  }
  return std::nullopt;
}

}  // namespace

int64_t AvailableMemoryKb() {
  return KbField("/proc/meminfo", "MemAvailable:").value_or(INT64_MAX);  // unknown: no pressure
}

int64_t FreeDiskKb(const std::string& dir) {
  struct statvfs st {};
  if (statvfs(dir.c_str(), &st) != 0) return INT64_MAX;
  return static_cast<int64_t>(st.f_bavail) * static_cast<int64_t>(st.f_frsize) / 1024;
}

int64_t ProcessPssKb(int pid) {
  return KbField("/proc/" + std::to_string(pid) + "/smaps_rollup", "Pss:").value_or(0);
}

}  // namespace gantry::agent
