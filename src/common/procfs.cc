#include "common/procfs.h"

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

namespace gantry {

std::optional<ProcStat> ReadProcStat(int pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string line;
  if (!std::getline(in, line)) return std::nullopt;
  // The command name is in parentheses and may hold anything, ')' included: parse after the
  // last ')'.
  const size_t close = line.rfind(')');
  if (close == std::string::npos) return std::nullopt;
  ProcStat s;
  if (sscanf(line.c_str() + close + 1, " %c %d %d", &s.state, &s.ppid, &s.pgrp) != 3) {
    return std::nullopt;
  }
  return s;
}

char ProcState(int pid) {
  const std::optional<ProcStat> s = ReadProcStat(pid);
  return s ? s->state : 0;
}

std::optional<int> ChildByNsPid(int parent, int ns_pid) {
  std::error_code ec;
  const std::string tasks = "/proc/" + std::to_string(parent) + "/task";
  for (const auto& task : std::filesystem::directory_iterator(tasks, ec)) {
    std::ifstream children(task.path() / "children");
    int pid;
    while (children >> pid) {
      std::ifstream status("/proc/" + std::to_string(pid) + "/status");
      std::string line;
      while (std::getline(status, line)) {
        if (!line.starts_with("NSpid:")) continue;
        std::istringstream fields(line.substr(6));
        int last = 0;
        for (int v; fields >> v;) last = v;
        if (last == ns_pid) return pid;
        break;
      }
    }
  }
  return std::nullopt;
}

}  // namespace gantry
