#pragma once
// Calls to the server's HTTP API for the subcommands, with the error printing they share.

#include <cstdint>
#include <functional>
#include <optional>
#include <string>

#include "cli/context.h"
#include "common/json.h"

namespace gantry::cli {

struct Reply {
  int status = 0;
  json::value body;  // the parsed JSON body; the raw text as a string when it is not JSON
};

// One call to ctx.url + `path` with ctx.api_key as a Bearer token (ctx.Resolve() must have
// run). On failure prints the error (and a hint on 401) to ctx.err, sets ctx.rc and returns
// nullopt: kExitUsage for a bad URL, kExitUnreachable when the server did not answer,
// kExitFailed for an HTTP status >= 400, except that an answer with status `expected_error`
// (e.g. 404 for "does it exist?") is returned without a word.
std::optional<Reply> Call(Context& ctx, const std::string& method, const std::string& path,
                          const std::string& body = "", int64_t timeout_ms = 30'000,
                          int expected_error = 0);

// A GET for what is only advice (a warning, a hint): the reply when the server answered with a
// status below 400, else nullopt, without a word and without touching ctx.rc.
std::optional<Reply> Peek(const Context& ctx, const std::string& path, int64_t timeout_ms = 10'000);

// Resolves the server, makes one call and prints its answer: JSON with --json, else through
// `human`. A failed call returns nullopt (Call set ctx.rc).
std::optional<Reply> Invoke(Context& ctx, const std::string& method, const std::string& path,
                            const std::string& body,
                            const std::function<void(const json::value&)>& human,
                            int64_t timeout_ms = 30'000);

}  // namespace gantry::cli
