// run and status: jobs through the RunPod-compatible /v2 routes. `run` submits with /run and
// follows the job through /stream, printing each chunk as it comes; both end by reporting the
// job's status with the exit codes of context.h.

#include <memory>
#include <optional>
#include <string>

#include "cli/client.h"
#include "cli/commands.h"
#include "cli/format.h"
#include "http/http.h"

namespace gantry::cli {
namespace {

// After this long IN_QUEUE, `run` asks /health whether any node can run the endpoint at all,
// and again every kHealthEveryMs while the job stays queued.
constexpr int64_t kHealthAfterMs = 1'000;
constexpr int64_t kHealthEveryMs = 5'000;
// The shortest time between two /stream calls that brought nothing (the server holds each
// for up to a second; this keeps a server that does not from being asked in a tight loop).
constexpr int64_t kMinPollMs = 100;

struct JobFlags {
  std::string endpoint;
  std::string input;   // run: JSON
  std::string job_id;  // status
  bool async = false;
  int64_t wait_ms = 90'000;  // run: how long to follow the job
};

std::string EndpointBase(const std::string& endpoint) {
  return "/v2/" + http::PercentEncode(endpoint);
}

bool IsFailed(const std::string& status) {
  return status == "FAILED" || status == "TIMED_OUT" || status == "CANCELLED";
}

bool IsTerminal(const std::string& status) { return status == "COMPLETED" || IsFailed(status); }

// A job's error as a person reads it. A string is itself, unless it is the JSON that RunPod's
// worker library sends for an exception ({"error_type", "error_message", "error_traceback",
// ...}): then its traceback, else its message. Anything else is compact JSON. No trailing
// newline.
std::string ErrorText(const json::value* error) {
  if (!error || error->is_null()) return "";
  if (!error->is_string()) return ToJson(*error);
  std::string text(error->as_string());
  auto inner = ParseJson(text);
  if (inner.ok() && inner->is_object()) {
    std::string tb = Field(*inner, "error_traceback");
    std::string msg = Field(*inner, "error_message");
    if (!tb.empty())
      text = tb;
    else if (!msg.empty())
      text = msg;
  }
  while (!text.empty() && text.back() == '\n') text.pop_back();
  return text;
}

// Where a job that has not finished stands, on stderr: why it cannot start (`reason`), or how
// long it was followed (waited_ms >= 0) and how to see it later. Sets kExitNotDone.
void ReportNotDone(Context& ctx, const std::string& endpoint, const std::string& id,
                   const std::string& status, int64_t waited_ms, const std::string& reason) {
  std::string line = "gantry: job " + id + " is " + status;
  if (!reason.empty()) {
    line += ": " + reason;
  } else if (waited_ms >= 0) {
    line += " after " + std::to_string(waited_ms) + " ms";
  }
  ctx.PrintError("%s\n", line.c_str());
  if (waited_ms >= 0) {
    ctx.PrintError("hint: see it later with: gantry status %s %s\n", endpoint.c_str(), id.c_str());
  }
  ctx.rc = kExitNotDone;
}

// Reports a job from its /status reply `b`: with --json the reply itself on stdout, else (when
// show_output) a completed job's output; a failed job's error on stderr (exit 1); for a job not
// done, see ReportNotDone (exit 4).
void ReportStatus(Context& ctx, const std::string& endpoint, const json::value& b, bool show_output,
                  int64_t waited_ms) {
  const std::string id = Field(b, "id"), status = Field(b, "status");
  if (ctx.json && show_output) PrintJson(ctx.out, b);
  if (status == "COMPLETED") {
    const json::value* output = b.is_object() ? Find(b.as_object(), "output") : nullptr;
    if (!ctx.json && show_output && output && !output->is_null()) {
      ctx.Print("%s\n", Str(*output).c_str());
    }
    return;
  }
  if (IsFailed(status)) {
    const std::string text = ErrorText(b.is_object() ? Find(b.as_object(), "error") : nullptr);
    if (text.empty()) {
      ctx.PrintError("gantry: job %s is %s\n", id.c_str(), status.c_str());
    } else if (text.find('\n') == std::string::npos) {
      ctx.PrintError("gantry: job %s is %s: %s\n", id.c_str(), status.c_str(), text.c_str());
    } else {
      ctx.PrintError("gantry: job %s is %s:\n%s\n", id.c_str(), status.c_str(), text.c_str());
    }
    ctx.rc = kExitFailed;
    return;
  }
  ReportNotDone(ctx, endpoint, id, status, waited_ms, Field(b, "reason"));
}

// Prints the chunks of a /stream reply, one JSON a line, at once; how many.
size_t PrintChunks(const Context& ctx, const json::value& b) {
  const json::value* stream = b.is_object() ? Find(b.as_object(), "stream") : nullptr;
  if (!stream || !stream->is_array()) return 0;
  for (const auto& c : stream->as_array()) {
    const json::value* output = c.is_object() ? Find(c.as_object(), "output") : nullptr;
    PrintJson(ctx.out, output ? *output : c);
  }
  ctx.out.flush();
  return stream->as_array().size();
}

// Follows job `id` through /stream until it ends or f.wait_ms pass, printing its chunks as they
// come; then reports its status (its output only if no chunk was printed). A queued job whose
// endpoint no node can run (/health's "unplaceable") is reported at once.
void Follow(Context& ctx, const JobFlags& f, const std::string& id) {
  const std::string base = EndpointBase(f.endpoint);
  const int64_t start = ctx.clock.NowMs();
  int64_t next_health_ms = start + kHealthAfterMs;
  bool chunks = false;
  for (;;) {
    const int64_t poll_start = ctx.clock.NowMs();
    auto r = Call(ctx, "GET", base + "/stream/" + http::PercentEncode(id));
    if (!r) return;
    const size_t n = PrintChunks(ctx, r->body);
    chunks = chunks || n > 0;
    const std::string status = Field(r->body, "status");
    const int64_t now = ctx.clock.NowMs();
    if (IsTerminal(status) || now - start >= f.wait_ms) break;
    if (status == "IN_QUEUE" && now >= next_health_ms) {
      auto health = Peek(ctx, base + "/health");
      const std::string why = health ? Field(health->body, "unplaceable") : "";
      if (!why.empty()) return ReportNotDone(ctx, f.endpoint, id, status, -1, why);
      next_health_ms = now + kHealthEveryMs;
    }
    if (n == 0 && now - poll_start < kMinPollMs) ctx.sleep(kMinPollMs - (now - poll_start));
  }
  auto st = Call(ctx, "GET", base + "/status/" + http::PercentEncode(id));
  if (!st) return;
  ReportStatus(ctx, f.endpoint, st->body, !chunks, ctx.clock.NowMs() - start);
}

// Submits the job (/run); with f.async prints its id (the reply with --json), else follows it.
void Run(Context& ctx, const JobFlags& f) {
  auto input = ParseJson(f.input);
  if (!input.ok()) {
    ctx.PrintError("gantry: --input is not valid JSON: %s\n", input.status().message().c_str());
    ctx.rc = kExitUsage;
    return;
  }
  ctx.Resolve();
  auto r =
      Call(ctx, "POST", EndpointBase(f.endpoint) + "/run", ToJson(json::object{{"input", *input}}));
  if (!r) return;
  const std::string id = Field(r->body, "id");
  if (id.empty()) {
    ctx.PrintError("gantry: the server's reply has no job id: %s\n", ToJson(r->body).c_str());
    ctx.rc = kExitFailed;
    return;
  }
  if (f.async) {
    if (ctx.json)
      PrintJson(ctx.out, r->body);
    else
      ctx.Print("%s\n", id.c_str());
    return;
  }
  Follow(ctx, f, id);
}

void ShowStatus(Context& ctx, const JobFlags& f) {
  ctx.Resolve();
  auto r = Call(ctx, "GET", EndpointBase(f.endpoint) + "/status/" + http::PercentEncode(f.job_id));
  if (!r) return;
  ReportStatus(ctx, f.endpoint, r->body, /*show_output=*/true, /*waited_ms=*/-1);
}

}  // namespace

void AddJobCommands(CLI::App& app, Context& ctx) {
  auto f = std::make_shared<JobFlags>();
  auto* run = app.add_subcommand(
      "run",
      "Submit a job and follow it: its stream chunks as they come (one JSON a line), else its "
      "output; a failed job's error goes to stderr (exit 1), a job not done within --wait "
      "exits 4");
  run->add_option("endpoint", f->endpoint, "Endpoint id")->required();
  run->add_option("--input", f->input, "The job's input as JSON, e.g. '{\"prompt\": \"hi\"}'")
      ->required();
  run->add_flag("--async", f->async,
                "Print the job id alone and return at once (JOB=$(gantry run ... --async))");
  run->add_option("--wait", f->wait_ms, "Most milliseconds to follow the job")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  run->callback([&ctx, f] { Run(ctx, *f); });

  auto* status = app.add_subcommand(
      "status",
      "Show a job: its output (exit 0), its error on stderr (exit 1), or that it is not done "
      "yet (exit 4)");
  status->add_option("endpoint", f->endpoint, "Endpoint id")->required();
  status->add_option("job", f->job_id, "Job id")->required();
  status->callback([&ctx, f] { ShowStatus(ctx, *f); });
}

}  // namespace gantry::cli
