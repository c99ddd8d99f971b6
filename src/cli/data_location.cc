#include "cli/data_location.h"

#include <filesystem>

#include "cli/commands.h"
#include "coordinator/config.h"
#include "store/location.h"

namespace idlefleet::cli {

void add_data_location(CLI::App& cmd, DataLocation& where) {
  CLI::Option* dir = cmd.add_option("--data-dir", where.data_dir, "The coordinator's data directory (default idlefleet-data)");
  CLI::Option* config = cmd.add_option("-c,--config", where.config_path, "Take the data directory from this coordinator config");
  dir->excludes(config);
  cmd.add_option("--database", where.database,
                 "The coordinator's PostgreSQL database (postgresql://...), when its stores are there");
}

namespace {

// The config file's settings, or the defaults when none is given.
coordinator::CoordinatorConfig config_of(const DataLocation& where) {
  coordinator::CoordinatorConfig c;
  if (!where.config_path.empty()) {
    auto loaded = coordinator::load_coordinator_config(where.config_path);
    if (!loaded) throw CommandError{loaded.error().message};
    c = *loaded;
  }
  return c;
}

}  // namespace

std::string data_file(const DataLocation& where, std::string_view file_name) {
  const std::string dir = where.data_dir.empty() ? config_of(where).data_dir : where.data_dir;
  return (std::filesystem::path(dir) / std::string(file_name)).string();
}

std::string store_location(const DataLocation& where, std::string_view sqlite_file) {
  std::string database = where.database;
  if (database.empty() && !where.config_path.empty()) database = config_of(where).database;
  if (database.empty()) return data_file(where, sqlite_file);
  if (!store::is_postgres_url(database)) {
    throw CommandError{"--database takes a postgresql:// URL, got '" + store::redact_postgres_url(database) + "'"};
  }
  return database;
}

}  // namespace idlefleet::cli
