#include "cli/data_location.h"

#include <filesystem>

#include "cli/commands.h"
#include "coordinator/config.h"

namespace idlefleet::cli {

void add_data_location(CLI::App& cmd, DataLocation& where) {
  CLI::Option* dir = cmd.add_option("--data-dir", where.data_dir, "The coordinator's data directory (default idlefleet-data)");
  CLI::Option* config = cmd.add_option("-c,--config", where.config_path, "Take the data directory from this coordinator config");
  dir->excludes(config);
}

std::string data_file(const DataLocation& where, std::string_view file_name) {
  std::string dir = where.data_dir;
  if (dir.empty()) {
    coordinator::CoordinatorConfig c;
    if (!where.config_path.empty()) {
      auto loaded = coordinator::load_coordinator_config(where.config_path);
      if (!loaded) throw CommandError{loaded.error().message};
      c = *loaded;
    }
    dir = c.data_dir;
  }
  return (std::filesystem::path(dir) / std::string(file_name)).string();
}

}  // namespace idlefleet::cli
