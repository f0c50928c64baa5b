// logs: an endpoint's worker logs from /v1/logs, once or followed (long-polls).

#include <algorithm>
#include <memory>
#include <string>

#include "cli/client.h"
#include "cli/commands.h"
#include "cli/format.h"
#include "http/http.h"

namespace gantry::cli {
namespace {

struct LogFlags {
  std::string endpoint, worker, job;
  bool follow = false;
};

// Prints the lines after sequence number 0, then (with --follow) every new one, until a call
// fails (Call's exit code).
void Logs(Context& ctx, const LogFlags& f) {
  ctx.Resolve();
  int64_t after = 0;
  do {
    std::string path = "/v1/logs?endpoint=" + http::PercentEncode(f.endpoint) +
                       "&after=" + std::to_string(after) + (f.follow ? "&wait=30000" : "");
    if (!f.worker.empty()) path += "&worker=" + http::PercentEncode(f.worker);
    if (!f.job.empty()) path += "&job=" + http::PercentEncode(f.job);
    auto r = Call(ctx, "GET", path, "", 60'000);
    if (!r) return;
    for (const auto& l : r->body.as_object().at("lines").as_array()) {
      after = std::max<int64_t>(after, AsInt(l.as_object().at("seq")).value_or(after));
      if (ctx.json)
        PrintJson(ctx.out, l);
      else
        ctx.Print("%s %s\n", Field(l, "workerId").c_str(), Field(l, "text").c_str());
    }
    ctx.out.flush();
  } while (f.follow);
}

}  // namespace

void AddLogsCommand(CLI::App& app, Context& ctx) {
  auto f = std::make_shared<LogFlags>();
  auto* logs = app.add_subcommand("logs", "Show an endpoint's worker logs");
  logs->add_option("endpoint", f->endpoint, "Endpoint id")->required();
  logs->add_option("--worker", f->worker, "Only this worker's lines");
  logs->add_option("--job", f->job, "Only the lines the job's worker logged while it ran");
  logs->add_flag("-f,--follow", f->follow, "Keep printing new lines");
  logs->callback([&ctx, f] { Logs(ctx, *f); });
}

}  // namespace gantry::cli
