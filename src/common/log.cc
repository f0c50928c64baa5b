#include "common/log.h"

#include <sys/time.h>

#include <atomic>
#include <cstdio>
#include <ctime>

namespace gantry {

static std::atomic<int> g_level{static_cast<int>(LogLevel::kInfo)};

void SetLogLevel(LogLevel level) { g_level = static_cast<int>(level); }
LogLevel GetLogLevel() { return static_cast<LogLevel>(g_level.load()); }

void Logf(LogLevel level, const char* fmt, ...) {
  if (static_cast<int>(level) < g_level.load()) return;
  static const char* kNames[] = {"DEBUG", "INFO", "WARN", "ERROR"};
  char msg[2048];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  timeval tv;
  gettimeofday(&tv, nullptr);
  tm t;
  gmtime_r(&tv.tv_sec, &t);
  fprintf(stderr, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ %-5s %s\n", t.tm_year + 1900, t.tm_mon + 1,
          t.tm_mday, t.tm_hour, t.tm_min, t.tm_sec, static_cast<int>(tv.tv_usec / 1000),
          kNames[static_cast<int>(level)], msg);
}

}  // namespace gantry
