// Where `idlefleet run` (and later the demo) finds a model when none is named.
//
// Order: the -m flag; $IDLEFLEET_MODEL; the cached conversion of the bundled
// test model (models/stories260K.gguf under the current directory); and, when
// the project's ../shared/models holds the llama2.c checkpoint, a conversion
// of it made on the spot into that cache. A user's machine has no ../shared:
// there the error says how to pull or name a model.
#pragma once

#include <string>

namespace idlefleet::cli {

// Returns the GGUF path to load, converting the shared stories260K checkpoint
// when that is what is available. Throws CommandError with advice otherwise.
std::string locate_model(const std::string& flag_value, bool verbose);

}  // namespace idlefleet::cli
