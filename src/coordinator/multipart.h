// multipart/form-data (RFC 7578), as clients upload files: POST /v1/files
// carries a `purpose` field and a `file` part with a filename.
//
// parse_multipart() takes the request's Content-Type (which names the
// boundary) and its body, and returns the parts in order. It trusts nothing:
// the boundary must be 1..70 characters; every part needs a
// Content-Disposition of form-data with a name; part headers are bounded
// (kPartHeaderBytesMax) and so is their number (kPartsMax); the body must end
// with the closing delimiter. Anything else is an error that says what is
// wrong. The part bodies are views into `body` (no copies of large files).
//
// Thread-safety: a pure function.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "common/result.h"

namespace idlefleet::coordinator {

inline constexpr size_t kPartsMax = 16;
inline constexpr size_t kPartHeaderBytesMax = 8u << 10;
inline constexpr size_t kBoundaryBytesMax = 70;

struct FormPart {
  std::string name;
  std::string filename;      // "" when the part is a plain field
  std::string content_type;  // "" when not given
  std::string_view data;     // into the body given to parse_multipart()
};

Result<std::vector<FormPart>> parse_multipart(std::string_view content_type, std::string_view body);

}  // namespace idlefleet::coordinator
