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
// run). On failure (bad URL, server unreachable, HTTP status >= 400) prints the error (and a
// hint on 401) to ctx.err and returns nullopt, except that an answer with status
// `expected_error` (e.g. 404 for "does it exist?") is returned without a word. Leaves ctx.rc.
std::optional<Reply> Call(const Context& ctx, const std::string& method, const std::string& path,
                          const std::string& body = "", int64_t timeout_ms = 30'000,
                          int expected_error = 0);

// Resolves the server, makes one call and prints its answer: JSON with --json, else through
// `human`. A failed call sets ctx.rc to 1 and returns nullopt.
std::optional<Reply> Invoke(Context& ctx, const std::string& method, const std::string& path,
                            const std::string& body,
                            const std::function<void(const json::value&)>& human,
                            int64_t timeout_ms = 30'000);

}  // namespace gantry::cli
