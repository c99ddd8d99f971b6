#include "common/text_file.h"

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <memory>

namespace idlefleet {

Result<std::string> read_text_file(const std::string& path, size_t bytes_max, std::string_view what) {
  const std::string name = std::string(what) + " '" + path + "'";
  std::unique_ptr<std::FILE, int (*)(std::FILE*)> f(std::fopen(path.c_str(), "rb"), &std::fclose);
  if (f == nullptr) {
    const int err = errno;
    return Unexpected(err == ENOENT ? ErrorCode::kNotFound : ErrorCode::kIo, name + ": " + std::strerror(err));
  }
  std::string text(bytes_max + 1, '\0');
  size_t n = 0;
  while (n < text.size()) {
    const size_t got = std::fread(text.data() + n, 1, text.size() - n, f.get());
    if (got == 0) break;
    n += got;
  }
  if (std::ferror(f.get())) return Unexpected(ErrorCode::kIo, name + ": read failed: " + std::strerror(errno));
  if (n > bytes_max) {
    return Unexpected(ErrorCode::kOutOfRange, name + " is more than " + std::to_string(bytes_max) + " bytes");
  }
  text.resize(n);
  return text;
}

}  // namespace idlefleet
