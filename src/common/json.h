#pragma once
// Boost.JSON helpers shared by the modules. Parsing never throws: errors are values.

#include <boost/json/value.hpp>
#include <cstdint>
#include <map>
#include <string>
#include <string_view>

#include "common/status.h"

namespace gantry {

namespace json = boost::json;

// Parses `text` as one JSON value. InvalidArgument with the parser's message on failure; where
// the failure is a NaN, Infinity or -Infinity (which JSON does not have, though Python's json
// writes them), the message names the value's path instead: `input.a[3] is not a finite
// number: JSON has no NaN` (paths as CheckFinite writes them, from the top level's keys).
// A number too large for a double (1e400) parses as an infinity: see CheckFinite.
Result<json::value> ParseJson(std::string_view text);

// Compact serialization, as Python's json.dumps(v, separators=(",", ":")) writes it:
// - a double in the shortest form that reads back as the same double, Python's repr: 0.1, 1.0
//   (a whole double keeps its ".0"), 0.00036799999999999995, -0.0; with an exponent ("1e+16",
//   "1e-07", "1.5e+300") from a magnitude of 1e16 up and under 1e-4. A non-finite double,
//   which JSON does not have (and
//   CheckFinite keeps out of what clients and workers send), is written as null, as
//   JavaScript's JSON.stringify does: the output is always JSON;
// - integers (int64, uint64) as they are;
// - strings with `"`, `\` and control characters escaped (\b \t \n \f \r, else \u00XX); every
//   other byte, UTF-8 included, as it is.
std::string ToJson(const json::value& v);
// Appends ToJson(v) to `out`.
void AppendJson(std::string& out, const json::value& v);
// Appends `d` as ToJson writes a double.
void AppendJsonDouble(std::string& out, double d);

// OK when no number in `v` is NaN or infinite. Otherwise InvalidArgument naming the first such
// value by its path: `path` for `v` itself, `path.key` and `path[3]` inside it (a key that is
// not a plain name is written `path["a key"]`); an empty `path` starts with the top level's
// keys (`input.a[3]`). Message: `input.a[3] is not a finite number: ...`.
Status CheckFinite(const json::value& v, std::string_view path);

// ParseJson, then CheckFinite(v, ""): a body that must be JSON with finite numbers only (an
// endpoint spec, a worker's result), its bad number named by its path from the top.
Result<json::value> ParseFiniteJson(std::string_view text);

// `s` as a quoted, escaped JSON string literal.
std::string JsonQuote(std::string_view s);

// Reads an integer-valued number from `v` (int64, uint64 or an integral double).
std::optional<int64_t> AsInt(const json::value& v);

// A string map (an environment) as a JSON object of strings.
json::object StringMapJson(const std::map<std::string, std::string>& m);

// Looks up `key` in `obj`; nullptr when absent.
const json::value* Find(const json::object& obj, std::string_view key);

}  // namespace gantry
