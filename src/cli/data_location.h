// Where the coordinator keeps its SQLite files, as the admin commands find
// it: --data-dir DIR, or the data_dir of -c/--config FILE, or the
// coordinator's default (idlefleet-data). Shared by `idlefleet admin` and
// `idlefleet ledger`, which work on a running coordinator's files.
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
};

// Adds --data-dir and -c/--config (mutually exclusive) to `cmd`.
void add_data_location(CLI::App& cmd, DataLocation& where);

// The path of `file_name` in the data directory. Throws CommandError for a
// config file that cannot be loaded.
std::string data_file(const DataLocation& where, std::string_view file_name);

}  // namespace idlefleet::cli
