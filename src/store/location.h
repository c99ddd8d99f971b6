// Where a store lives: a location string is a PostgreSQL connection URI
// (postgresql://... or postgres://..., libpq's syntax:
// https://www.postgresql.org/docs/15/libpq-connect.html#LIBPQ-CONNSTRING) or
// a SQLite path. Plain string functions, without libpq, so that the config
// parser (and its fuzz target) can check a location.
//
// Thread-safety: free functions, safe from any thread.
#pragma once

#include <string>
#include <string_view>

namespace idlefleet::store {

// Bytes of one location string (a URL or a path).
inline constexpr size_t kStoreLocationBytesMax = 4096;

// True for a location that names a PostgreSQL database.
bool is_postgres_url(std::string_view location);
// The URL with its password (if any) replaced by "***", for labels and logs.
std::string redact_postgres_url(std::string_view url);

}  // namespace idlefleet::store
