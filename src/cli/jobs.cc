// run and status: jobs through the RunPod-compatible /v2 routes.

#include <memory>
#include <string>

#include "cli/client.h"
#include "cli/commands.h"
#include "cli/format.h"
#include "http/http.h"

namespace gantry::cli {
namespace {

struct JobFlags {
  std::string endpoint;
  std::string input;   // run: JSON
  std::string job_id;  // status
  bool async = false;
  int64_t wait_ms = 90'000;  // run: how long /runsync waits
};

void PrintRunResult(const Context& ctx, const JobFlags& f, const json::value& b) {
  std::string status = Field(b, "status");
  if (f.async) {
    ctx.Print("%s %s\n", Field(b, "id").c_str(), status.c_str());
  } else if (status == "COMPLETED") {
    ctx.Print("%s\n", Field(b, "output").c_str());
  } else {
    ctx.Print("job %s is %s", Field(b, "id").c_str(), status.c_str());
    if (!Field(b, "error").empty()) ctx.Print(": %s", Field(b, "error").c_str());
    ctx.Print("\n");
  }
}

// Submits the job; with !f.async waits for it, and a job that did not complete exits 1.
void Run(Context& ctx, const JobFlags& f) {
  auto input = ParseJson(f.input);
  if (!input.ok()) {
    ctx.PrintError("gantry: --input is not valid JSON: %s\n", input.status().message().c_str());
    ctx.rc = 2;
    return;
  }
  std::string body = ToJson(json::object{{"input", *input}});
  std::string path = "/v2/" + http::PercentEncode(f.endpoint) +
                     (f.async ? "/run" : "/runsync?wait=" + std::to_string(f.wait_ms));
  auto r = Invoke(
      ctx, "POST", path, body, [&](const json::value& b) { PrintRunResult(ctx, f, b); },
      f.wait_ms + 30'000);
  if (!r) return;
  std::string status = Field(r->body, "status");
  if (!f.async && (status == "FAILED" || status == "TIMED_OUT" || status == "CANCELLED")) {
    ctx.rc = 1;
  }
}

void PrintStatus(const Context& ctx, const json::value& b) {
  PrintTable(ctx.out, {"ID", "STATUS", "DELAY MS", "EXEC MS", "WORKER"},
             {{Field(b, "id"), Field(b, "status"), Field(b, "delayTime"), Field(b, "executionTime"),
               Field(b, "workerId")}});
  if (!Field(b, "output").empty()) ctx.Print("output: %s\n", Field(b, "output").c_str());
  if (!Field(b, "error").empty()) ctx.Print("error: %s\n", Field(b, "error").c_str());
}

}  // namespace

void AddJobCommands(CLI::App& app, Context& ctx) {
  auto f = std::make_shared<JobFlags>();
  auto* run = app.add_subcommand("run", "Submit a job and (by default) wait for its result");
  run->add_option("endpoint", f->endpoint, "Endpoint id")->required();
  run->add_option("--input", f->input, "The job's input as JSON, e.g. '{\"prompt\": \"hi\"}'")
      ->required();
  run->add_flag("--async", f->async, "Return the job id at once (/run) instead of waiting");
  run->add_option("--wait", f->wait_ms, "Most milliseconds /runsync waits (1000-300000)")
      ->capture_default_str();
  run->callback([&ctx, f] { Run(ctx, *f); });

  auto* status = app.add_subcommand("status", "Show a job's status");
  status->add_option("endpoint", f->endpoint, "Endpoint id")->required();
  status->add_option("job", f->job_id, "Job id")->required();
  status->callback([&ctx, f] {
    Invoke(ctx, "GET",
           "/v2/" + http::PercentEncode(f->endpoint) + "/status/" + http::PercentEncode(f->job_id),
           "", [&](const json::value& b) { PrintStatus(ctx, b); });
  });
}

}  // namespace gantry::cli
