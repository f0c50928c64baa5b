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

// Parses `text` as one JSON value. InvalidArgument with the parser's message on failure.
Result<json::value> ParseJson(std::string_view text);

// Compact serialization.
std::string ToJson(const json::value& v);

// `s` as a quoted, escaped JSON string literal.
std::string JsonQuote(std::string_view s);

// Reads an integer-valued number from `v` (int64, uint64 or an integral double).
std::optional<int64_t> AsInt(const json::value& v);

// A string map (an environment) as a JSON object of strings.
json::object StringMapJson(const std::map<std::string, std::string>& m);

// Looks up `key` in `obj`; nullptr when absent.
const json::value* Find(const json::object& obj, std::string_view key);

}  // namespace gantry
