#pragma once
// gantry.toml: TOML 1.0 (read with toml++) as the JSON of an endpoint spec.

#include <string>

#include "common/json.h"
#include "common/status.h"

namespace gantry::cli {

// Parses TOML text into a JSON object: tables (inline ones too) become objects, arrays of tables
// arrays of objects, keys keep the order of the text. Dates and times become RFC 3339 strings:
// an offset date-time "1979-05-27T07:32:00Z" or "...-07:00", a local date-time
// "1979-05-27T07:32:00.5", a local date "1979-05-27", a local time "07:32:00" (fractional
// seconds only when not zero). InvalidArgument "gantry.toml line L, column C: what" on a
// syntax error, or on inf or nan, which JSON cannot hold.
Result<json::object> ParseToml(const std::string& text);

}  // namespace gantry::cli
