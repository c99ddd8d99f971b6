#include "cli/commands.h"

namespace idlefleet::cli {
// Placeholder while this command is being written; replaced in the same session.
void add_run(CLI::App& app) { (void)app; }
}  // namespace idlefleet::cli
