// Where the coordinator keeps its stores, as the admin commands find them:
// --data-dir DIR, or the data_dir of -c/--config FILE, or the coordinator's
// default (idlefleet-data); and the PostgreSQL database instead when
// --database URL is given or the config names one. Shared by `idlefleet
// admin` and `idlefleet ledger`, which work on a running coordinator's stores.
//
// Thread-safety: none needed (the CLI's one thread).
#pragma once

#include <CLI/CLI.hpp>

#include <string>
#include <string_view>

namespace idlefleet::cli {

struct DataLocation {
  std::string data_dir;
  std::string config_path;
  std::string database;
};

// Adds --data-dir and -c/--config (mutually exclusive) and --database to `cmd`.
void add_data_location(CLI::App& cmd, DataLocation& where);

// The path of `file_name` in the data directory. Throws CommandError for a
// config file that cannot be loaded.
std::string data_file(const DataLocation& where, std::string_view file_name);

// Where a store lives: the database (a postgresql:// URL) when there is one,
// else data_file(where, sqlite_file). Throws CommandError as data_file does.
std::string store_location(const DataLocation& where, std::string_view sqlite_file);

}  // namespace idlefleet::cli
