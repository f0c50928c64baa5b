#pragma once
// The `gantry` command: `server` runs the control plane; every other subcommand talks to a
// server's HTTP API only (DESIGN §1).

namespace gantry::cli {

// Returns the process exit code: 0 ok, 1 a failed call, 2 bad usage.
int Main(int argc, char** argv);

}  // namespace gantry::cli
