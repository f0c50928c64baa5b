#pragma once
// The `gantry` command: `server` runs the control plane; every other subcommand talks to a
// server's HTTP API only (DESIGN §1).

#include <ostream>

#include "cli/context.h"
#include "common/env.h"

namespace gantry::cli {

// Returns the process exit code (an ExitCode: 0 done, 1 failed, 2 bad usage, 3 server
// unreachable, 4 job not done within the wait). Prints to std::cout and std::cerr.
int Main(int argc, char** argv);

// The same, printing the commands' output to `out` and their messages to `err` (those of the
// server and agent that `server`, `up` and `agent` run still go to the process's stderr), with
// `clock` for durations back from now and `sleep` for waits between polls.
int Main(int argc, char** argv, std::ostream& out, std::ostream& err, const Clock& clock,
         SleepFn sleep);

}  // namespace gantry::cli
