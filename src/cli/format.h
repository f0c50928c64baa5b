#pragma once
// How the subcommands show the server's JSON: fields as text, aligned tables.

#include <ostream>
#include <string>
#include <vector>

#include "common/json.h"

namespace gantry::cli {

// A value as a person writes it: strings bare, null empty, numbers "2" and "0.5" (not JSON's
// "2E0" and "5E-1"), anything else as compact JSON.
std::string Str(const json::value& v);

// Str() of obj[key]; empty when `obj` is not an object or has no `key`.
std::string Field(const json::value& obj, const char* key);

// Str() of a duration in milliseconds; "-" when null.
std::string Ms(const json::value& v);

// A time in milliseconds since the Unix epoch as people read it, in UTC: "2026-12-07 06:39:03";
// "-" when `ms` is null, not a number or not positive.
std::string UtcTime(const json::value& ms);

// The header and rows in columns two spaces apart, one line each.
void PrintTable(std::ostream& out, const std::vector<std::string>& header,
                const std::vector<std::vector<std::string>>& rows);

// Compact JSON and a newline.
void PrintJson(std::ostream& out, const json::value& v);

}  // namespace gantry::cli
