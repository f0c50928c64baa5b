#pragma once
// What the subcommands of `gantry` share: where the server is, where output goes and the exit
// code. One Context per run of cli::Main, used on its thread.

#include <cstdint>
#include <functional>
#include <ostream>
#include <string>
#include <utility>

#include "common/env.h"

namespace gantry::cli {

// The exit codes of every command (docs/cli.md; `gantry --help` lists them too).
enum ExitCode : int {
  kExitOk = 0,
  kExitFailed = 1,       // the job failed, or the server refused a request (HTTP status >= 400)
  kExitUsage = 2,        // bad flags, arguments, input or gantry.toml
  kExitUnreachable = 3,  // the server could not be reached (or did not answer in time)
  kExitNotDone = 4,      // the job did not finish within the wait
};

// Blocks the calling thread for `ms` milliseconds. The binary sleeps; tests advance a FakeClock.
using SleepFn = std::function<void(int64_t ms)>;

struct Context {
  Context(std::ostream& out, std::ostream& err, const Clock& clock, SleepFn sleep)
      : out(out), err(err), clock(clock), sleep(std::move(sleep)) {}

  // --url and --api-key; Resolve() fills what they leave empty.
  std::string url;
  std::string api_key;
  // --json: print the server's JSON instead of tables.
  bool json = false;
  // The command's output (std::cout in the binary) and its messages (std::cerr).
  std::ostream& out;
  std::ostream& err;
  // Wall-clock time: for durations back from now (usage --since) and for how long `run` has
  // waited, with `sleep` between its polls.
  const Clock& clock;
  SleepFn sleep;
  // Main's return value, an ExitCode.
  int rc = kExitOk;

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
