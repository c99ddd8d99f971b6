// Plain HTTP requests for the commands that act as clients of a local
// coordinator (`idlefleet demo`'s trickle, `idlefleet sim live`'s demand,
// `idlefleet chaos`'s jobs and checks):
// libcurl, one connection per call, safe from any thread (libcurl 7.84 and
// later, Debian 12 has 7.88, initialise themselves thread-safely).
#pragma once

#include <string>

namespace idlefleet::cli {

// Responses above this are cut (the commands read small JSON answers).
inline constexpr size_t kHttpPostResponseBytesMax = 1u << 20;

struct HttpPostResult {
  long status = 0;   // 0: no whole response (connection refused or dropped, timeout)
  std::string body;  // at most kHttpPostResponseBytesMax bytes; what arrived, even of a dropped response
  // No connection was made (nothing reached the server): safe to retry.
  bool refused = false;
};

// POSTs `body` as application/json.
HttpPostResult post_json(const std::string& url, const std::string& body, long timeout_s);

// GETs `url`.
HttpPostResult http_get(const std::string& url, long timeout_s);

// POSTs one file as multipart/form-data, with `purpose` beside it (the
// OpenAI Files API: `POST /v1/files`).
HttpPostResult post_file(const std::string& url, const std::string& purpose, const std::string& file_name,
                         const std::string& content, long timeout_s);

}  // namespace idlefleet::cli
