#pragma once
// Minimal leveled logging to stderr. Thread-safe (one fprintf per line).
// Metrics, not log lines, are what tests and operators read (STYLE.md §9).

#include <cstdarg>

namespace gantry {

enum class LogLevel { kDebug = 0, kInfo = 1, kWarn = 2, kError = 3 };

void SetLogLevel(LogLevel level);
LogLevel GetLogLevel();
void Logf(LogLevel level, const char* fmt, ...) __attribute__((format(printf, 2, 3)));

}  // namespace gantry

#define GLOG_DEBUG(...) ::gantry::Logf(::gantry::LogLevel::kDebug, __VA_ARGS__)
#define GLOG_INFO(...) ::gantry::Logf(::gantry::LogLevel::kInfo, __VA_ARGS__)
#define GLOG_WARN(...) ::gantry::Logf(::gantry::LogLevel::kWarn, __VA_ARGS__)
#define GLOG_ERROR(...) ::gantry::Logf(::gantry::LogLevel::kError, __VA_ARGS__)
