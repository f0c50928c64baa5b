#pragma once
// What the subcommands of `gantry` share: where the server is, where output goes and the exit
// code. One Context per run of cli::Main, used on its thread.

#include <ostream>
#include <string>

#include "common/env.h"

namespace gantry::cli {

struct Context {
  Context(std::ostream& out, std::ostream& err, const Clock& clock)
      : out(out), err(err), clock(clock) {}

  // --url and --api-key; Resolve() fills what they leave empty.
  std::string url;
  std::string api_key;
  // --json: print the server's JSON instead of tables.
  bool json = false;
  // The command's output (std::cout in the binary) and its messages (std::cerr).
  std::ostream& out;
  std::ostream& err;
  // Wall-clock time, for durations back from now (usage --since).
  const Clock& clock;
  // Main's return value: 0 ok, 1 a failed call, 2 bad usage.
  int rc = 0;

  // Fills url and api_key where the flags left them empty: from GANTRY_URL/GANTRY_API_KEY, else
  // the config file ($GANTRY_CONFIG, default ~/.config/gantry/config.json: {"url", "apiKey"}),
  // else http://127.0.0.1:8000 and the key in $GANTRY_DATA_DIR/admin.key (default
  // gantry-data/). Drops trailing slashes of url. Safe to call again.
  void Resolve();

  // printf-style output to `out` and to `err`.
  void Print(const char* format, ...) const __attribute__((format(printf, 2, 3)));
  void PrintError(const char* format, ...) const __attribute__((format(printf, 2, 3)));
};

// The contents of the file at `path`; empty when it cannot be read.
std::string ReadFile(const std::string& path);

}  // namespace gantry::cli
