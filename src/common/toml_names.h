// Names of TOML value types for error messages ("fleet.vehicles: expected an
// integer, got a string"), shared by every reader of TOML files (the
// coordinator's config, the simulator's scenarios).
//
// Thread-safety: a pure function.
#pragma once

#include <toml++/toml.h>

namespace idlefleet {

inline const char* toml_type_name(toml::node_type t) {
  switch (t) {
    case toml::node_type::none: return "nothing";
    case toml::node_type::table: return "a table";
    case toml::node_type::array: return "an array";
    case toml::node_type::string: return "a string";
    case toml::node_type::integer: return "an integer";
    case toml::node_type::floating_point: return "a float";
    case toml::node_type::boolean: return "a boolean";
    case toml::node_type::date: return "a date";
    case toml::node_type::time: return "a time";
    case toml::node_type::date_time: return "a date-time";
  }
  return "an unknown type";
}

}  // namespace idlefleet
