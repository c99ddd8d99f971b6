// Downloads over any URL libcurl understands (http, https, file), and
// SHA-256 of files: what `idlefleet model pull` and the agent's model cache
// share.
//
// A download goes to PATH.part and is renamed into place only when it is
// complete, within its size bound and (when a digest is given) verified, so
// an interrupted or wrong download never looks like a finished file.
//
// Thread-safety: free functions; concurrent calls on different paths are safe.
#pragma once

#include <cstdint>
#include <functional>
#include <string>

#include "common/result.h"

namespace idlefleet::transport {

struct DownloadOptions {
  uint64_t bytes_max = uint64_t{64} << 30;  // refuse anything larger (a model is at most tens of GB)
  std::string sha256_hex;                    // expected digest, lower-case hex; "" = not checked
  int64_t connect_timeout_ms = 30000;
  // Called now and then with (bytes so far, total or 0 when unknown).
  std::function<void(uint64_t, uint64_t)> progress;
};

// Downloads `url` to `path`. Errors name the URL and what went wrong (HTTP
// status, size, digest mismatch).
Status download_file(const std::string& url, const std::string& path, const DownloadOptions& options = {});

// The SHA-256 of a file, lower-case hex.
Result<std::string> sha256_file(const std::string& path);

// The SHA-256 of bytes, lower-case hex.
std::string sha256_hex(std::string_view bytes);

}  // namespace idlefleet::transport
