#include "cli/cli.h"

#include <CLI/CLI.hpp>
#include <iostream>

#include "cli/commands.h"
#include "cli/context.h"

namespace gantry::cli {

int Main(int argc, char** argv) {
  SystemClock clock;
  return Main(argc, argv, std::cout, std::cerr, clock);
}

int Main(int argc, char** argv, std::ostream& out, std::ostream& err, const Clock& clock) {
  Context ctx(out, err, clock);  // before `app`, whose options and callbacks refer to it
  CLI::App app{
      "Gantry: a self-hosted serverless GPU platform, wire-compatible with RunPod Serverless.\n"
      "The server URL and API key come from --url/--api-key, GANTRY_URL/GANTRY_API_KEY, or\n"
      "~/.config/gantry/config.json ({\"url\": ..., \"apiKey\": ...}); with none, the CLI uses\n"
      "http://127.0.0.1:8000 and ./gantry-data/admin.key."};
  app.require_subcommand(1);
  app.add_option("--url", ctx.url, "Server URL (default $GANTRY_URL or http://127.0.0.1:8000)");
  app.add_option("--api-key", ctx.api_key, "API key (default $GANTRY_API_KEY)");
  app.add_flag("--json", ctx.json, "Print JSON instead of tables");

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
    return app.exit(e, out, err) == 0 ? 0 : 2;
  }
  return ctx.rc;
}

}  // namespace gantry::cli
