#pragma once
// The `gantry` command: `server` runs the control plane; every other subcommand talks to a
// server's HTTP API only (DESIGN §1).

#include <ostream>

#include "common/env.h"

namespace gantry::cli {

// Returns the process exit code: 0 ok, 1 a failed call, 2 bad usage. Prints to std::cout and
// std::cerr.
int Main(int argc, char** argv);

// The same, printing the commands' output to `out` and their messages to `err` (those of the
// server and agent that `server`, `up` and `agent` run still go to the process's stderr), with
// `clock` for durations back from now.
int Main(int argc, char** argv, std::ostream& out, std::ostream& err, const Clock& clock);

}  // namespace gantry::cli
