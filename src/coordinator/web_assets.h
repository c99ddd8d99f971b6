// The dashboard's files (web/ in the source tree), compiled into the binary
// by cmake/embed_web.cmake, which generates the definition of web_assets()
// (build/<preset>/generated/web_assets.cc) whenever a file under web/ changes.
// The coordinator serves them from memory (coordinator/dashboard.h): nothing
// is read from disk or fetched at run time.
//
// Thread-safety: immutable data.
#pragma once

#include <span>
#include <string_view>

namespace idlefleet::coordinator {

struct WebAsset {
  std::string_view path;          // "/index.html", "/assets/app.css": its path under web/, with a leading '/'
  std::string_view content_type;  // from the extension: "text/html; charset=utf-8", ...
  std::string_view bytes;         // the file's contents
};

// Every file under web/, sorted by path.
std::span<const WebAsset> web_assets();

}  // namespace idlefleet::coordinator
