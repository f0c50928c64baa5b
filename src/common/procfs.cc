#include "common/procfs.h"

#include <cstdio>
#include <fstream>
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

}  // namespace gantry
