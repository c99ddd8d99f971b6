#include "cli/commands.h"

namespace idlefleet::cli {
// Placeholder while this command is being written; replaced in the same session.
void add_model_inspect(CLI::App& model) { (void)model; }
}  // namespace idlefleet::cli
