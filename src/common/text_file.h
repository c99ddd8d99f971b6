// Reading a whole text file with a bound: configuration and scenario files
// are external input, so a file larger than its limit is refused rather than
// read (a pipe or a growing file has no size worth trusting, so the read
// itself stops one byte past the limit).
//
// Thread-safety: a pure function of the file system.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

#include "common/result.h"

namespace idlefleet {

// The file's bytes. Errors: kNotFound (no such file), kIo (open or read
// failed), kOutOfRange (more than bytes_max bytes). `what` names the file's
// kind in messages: "scenario file 'x.toml' is more than 1048576 bytes".
Result<std::string> read_text_file(const std::string& path, size_t bytes_max, std::string_view what);

}  // namespace idlefleet
