// usage: billed worker time and cost, and job time, from /v1/usage.

#include <cstdio>
#include <cstdlib>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "cli/client.h"
#include "cli/commands.h"
#include "cli/format.h"
#include "http/http.h"

namespace gantry::cli {
namespace {

struct UsageFlags {
  std::string since;  // a duration back from now: 90s, 30m, 24h, 7d (fractions allowed)
  std::string endpoint;
};

// "90s", "30m", "1.5h", "7d" in milliseconds; nullopt when malformed or negative.
std::optional<int64_t> ParseDurationMs(const std::string& s) {
  char* end = nullptr;
  double n = strtod(s.c_str(), &end);
  std::string unit(end);
  int64_t mult = unit == "s"   ? 1000
                 : unit == "m" ? 60'000
                 : unit == "h" ? 3'600'000
                 : unit == "d" ? 86'400'000
                               : 0;
  if (end == s.c_str() || mult == 0 || n < 0) return std::nullopt;
  return static_cast<int64_t>(n * static_cast<double>(mult));
}

// "H100 x2"; a CPU worker's (GPU type "cpu", no GPUs) just "cpu".
std::string GpuColumn(const json::value& line) {
  const std::string type = Field(line, "gpuType"), count = Field(line, "gpuCount");
  if (type == "cpu" || count.empty() || count == "0") return type;
  return type + " x" + count;
}

// The billed lines, then (unless `since`: the server keeps job counts as all-time totals by
// endpoint, which a --since cannot narrow) the job counts, then the totals.
void PrintUsage(const Context& ctx, const json::value& b, bool since) {
  std::vector<std::vector<std::string>> rows;
  for (const auto& l : b.as_object().at("byEndpoint").as_array()) {
    char cost[32];
    snprintf(cost, sizeof cost, "$%.4f", l.as_object().at("cost").to_number<double>());
    rows.push_back({Field(l, "endpointId"), GpuColumn(l), Field(l, "workers"),
                    Field(l, "billedSeconds"), cost});
  }
  PrintTable(ctx.out, {"ENDPOINT", "GPU", "WORKERS", "BILLED S", "COST"}, rows);
  std::vector<std::vector<std::string>> jrows;
  for (const auto& j : b.as_object().at("jobs").as_array()) {
    jrows.push_back({Field(j, "endpointId"), Field(j, "jobs"), Field(j, "executionMs")});
  }
  if (since) {
    ctx.PrintError(
        "note: job counts are all-time totals, so they are left out with --since (gantry "
        "usage without it shows them)\n");
  } else if (!jrows.empty()) {
    ctx.Print("\n");
    PrintTable(ctx.out, {"ENDPOINT", "JOBS (ALL TIME)", "EXECUTION MS (ALL TIME)"}, jrows);
  }
  ctx.Print("\ntotal: %s billed seconds, $%.4f\n", Field(b, "totalBilledSeconds").c_str(),
            b.as_object().at("totalCost").to_number<double>());
}

void Usage(Context& ctx, const UsageFlags& f) {
  int64_t since = 0;
  if (!f.since.empty()) {
    std::optional<int64_t> back = ParseDurationMs(f.since);
    if (!back) {
      ctx.PrintError("gantry: --since expects a duration like 30m, 24h or 7d\n");
      ctx.rc = kExitUsage;
      return;
    }
    since = ctx.clock.NowMs() - *back;
  }
  std::string path = "/v1/usage?since=" + std::to_string(since);
  if (!f.endpoint.empty()) path += "&endpoint=" + http::PercentEncode(f.endpoint);
  Invoke(ctx, "GET", path, "", [&](const json::value& b) { PrintUsage(ctx, b, !f.since.empty()); });
}

}  // namespace

void AddUsageCommand(CLI::App& app, Context& ctx) {
  auto f = std::make_shared<UsageFlags>();
  auto* usage = app.add_subcommand(
      "usage", "Show billed worker time and cost, and (all-time) job counts and time");
  usage->add_option(
      "--since", f->since,
      "Only workers that ran after this: a duration back from now (90s, 30m, 24h, 7d); "
      "leaves out the job counts, which are all-time totals");
  usage->add_option("--endpoint", f->endpoint, "Only this endpoint");
  usage->callback([&ctx, f] { Usage(ctx, *f); });
}

}  // namespace gantry::cli
