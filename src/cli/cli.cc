#include "cli/cli.h"

#include <CLI/CLI.hpp>
#include <chrono>
#include <cstdlib>
#include <iostream>
#include <thread>

#include "cli/commands.h"
#include "cli/context.h"

namespace gantry::cli {

namespace {

constexpr char kDescription[] =
    "Gantry: a self-hosted serverless GPU platform, wire-compatible with RunPod Serverless.\n"
    "The server URL and API key come from --url/--api-key, GANTRY_URL/GANTRY_API_KEY, or\n"
    "~/.config/gantry/config.json ({\"url\": ..., \"apiKey\": ...}); with none, the CLI uses\n"
    "http://127.0.0.1:8000 and $GANTRY_DATA_DIR/admin.key (default ./gantry-data/admin.key).\n"
    "--json, --url and --api-key go before or after the subcommand. Results go to stdout,\n"
    "errors and hints to stderr.\n"
    "Exit codes: 0 done; 1 the job failed, or the server refused the request; 2 bad usage;\n"
    "3 the server cannot be reached; 4 the job did not finish within the wait.\n"
    "See docs/cli.md.";

}  // namespace

int Main(int argc, char** argv) {
  SystemClock clock;
  return Main(argc, argv, std::cout, std::cerr, clock,
              [](int64_t ms) { std::this_thread::sleep_for(std::chrono::milliseconds(ms)); });
}

int Main(int argc, char** argv, std::ostream& out, std::ostream& err, const Clock& clock,
         SleepFn sleep) {
  Context ctx(out, err, clock, std::move(sleep));  // before `app`, whose callbacks refer to it
  CLI::App app{kDescription};
  app.require_subcommand(1);
  // The options below are taken after a subcommand too (`gantry ps --json`): every subcommand
  // added from here on inherits this.
  app.fallthrough();
  app.add_option("--url", ctx.url, "Server URL (default $GANTRY_URL or http://127.0.0.1:8000)");
  app.add_option("--api-key", ctx.api_key, "API key (default $GANTRY_API_KEY)");
  app.add_flag("--json", ctx.json, "Print JSON instead of tables (before or after the subcommand)");
  // Every https:// client of this process (the CLI's, an agent's, webhooks') reads it.
  app.add_option_function<std::string>(
         "--ca-file", [](const std::string& f) { setenv("GANTRY_CA_FILE", f.c_str(), 1); },
         "CA certificates (PEM) to verify an https:// server with, e.g. a private CA's (default "
         "$GANTRY_CA_FILE, else the system's)")
      ->check(CLI::ExistingFile);

  // In the order `gantry --help` lists them.
  AddServerCommand(app, ctx);
  AddEndpointCommands(app, ctx);
  AddJobCommands(app, ctx);
  AddKeyCommands(app, ctx);
  AddWorkerEnvCommand(app, ctx);
  AddAgentCommand(app, ctx);
  AddUpCommand(app, ctx);
  AddPsCommand(app, ctx);
  AddNodesCommand(app, ctx);
  AddDeployCommand(app, ctx);
  AddUsageCommand(app, ctx);
  AddLogsCommand(app, ctx);

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e, out, err) == 0 ? kExitOk : kExitUsage;
  }
  return ctx.rc;
}

}  // namespace gantry::cli
