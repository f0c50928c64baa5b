#pragma once
// A small TOML reader for gantry.toml: tables ([worker], [worker.env]), key = value with
// strings (basic "..." and literal '...'), integers, floats, booleans and arrays of those, and
// comments. Enough for an endpoint spec; inline tables and dates are refused with a clear error.

#include <string>

#include "common/json.h"
#include "common/status.h"

namespace gantry::cli {

// Parses TOML text into a JSON object. InvalidArgument names the line of the first error.
Result<json::object> ParseToml(const std::string& text);

}  // namespace gantry::cli
