#pragma once
// The subcommands of `gantry`, one registration function per command (or group of them); each
// adds its subcommands, their flags and their callbacks to `app`. The options live as long as
// `app` (the callbacks hold them); `ctx` must outlive app.parse(). cli::Main calls them in the
// order `gantry --help` lists the commands.

#include <CLI/CLI.hpp>

#include "cli/context.h"

namespace gantry::cli {

// server.cc: running the platform.
void AddServerCommand(CLI::App& app, Context& ctx);  // server
void AddAgentCommand(CLI::App& app, Context& ctx);   // agent
void AddUpCommand(CLI::App& app, Context& ctx);      // up

// endpoints.cc: endpoint create|update|get|ls|rm.
void AddEndpointCommands(CLI::App& app, Context& ctx);

// jobs.cc: run, status.
void AddJobCommands(CLI::App& app, Context& ctx);

// keys.cc: keys create|ls|revoke.
void AddKeyCommands(CLI::App& app, Context& ctx);

// nodes.cc: the fleet's nodes and workers.
void AddWorkerEnvCommand(CLI::App& app, Context& ctx);  // worker-env
void AddPsCommand(CLI::App& app, Context& ctx);         // ps
void AddNodesCommand(CLI::App& app, Context& ctx);      // nodes

// deploy.cc: deploy.
void AddDeployCommand(CLI::App& app, Context& ctx);

// usage.cc: usage.
void AddUsageCommand(CLI::App& app, Context& ctx);

// logs.cc: logs.
void AddLogsCommand(CLI::App& app, Context& ctx);

// The Python SDK next to this binary (build/gantry -> sdk/python), "" if none: what `agent`
// and `up` put on their workers' PYTHONPATH, and `worker-env` on a hand-started one's (nodes.cc).
std::string DefaultSdkPath();

}  // namespace gantry::cli
