// Query strings of HTTP request targets ("?month=2026-11&format=csv").
//
// Thread-safety: pure functions.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "common/result.h"

namespace idlefleet::transport {

// A query string's pairs ("a=1&b=x%20y" -> (a, 1), (b, x y)), in order:
// percent-escapes decoded and '+' read as a space (HTML forms), in names and
// values alike; a pair without '=' has an empty value; empty pairs ("a=1&&b")
// are skipped. A bad escape ("%4", "%zz") or more than pairs_max pairs is an
// error that names it, for a 400.
Result<std::vector<std::pair<std::string, std::string>>> parse_query(std::string_view query, size_t pairs_max = 16);

// Decodes percent-escapes (and '+' as a space when plus_as_space); a '%' not
// followed by two hex digits is an error.
Result<std::string> percent_decode(std::string_view text, bool plus_as_space);

}  // namespace idlefleet::transport
