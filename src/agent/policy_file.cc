#include "agent/policy_file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>

#include "common/check.h"
#include "core/protocol.h"

namespace idlefleet::agent {

namespace {

Unexpected io_error(const std::string& what, const std::string& path) {
  return Unexpected(ErrorCode::kIo, what + " " + path + ": " + std::strerror(errno));
}

}  // namespace

std::string policy_file_path(const std::string& key_dir, const std::string& vehicle_id) {
  return (std::filesystem::path(key_dir) / (vehicle_id + ".policy.json")).string();
}

Result<std::optional<core::OwnerPolicy>> load_policy_file(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    if (errno == ENOENT) return std::optional<core::OwnerPolicy>();
    return io_error("cannot open policy file", path);
  }
  struct stat st {};
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    return Unexpected(ErrorCode::kCorrupt, "policy file " + path + " is not a regular file");
  }
  if (static_cast<uint64_t>(st.st_size) > core::kPolicyBytesMax) {
    ::close(fd);
    return Unexpected(ErrorCode::kOutOfRange, "policy file " + path + " is over " +
                                                  std::to_string(core::kPolicyBytesMax) + " bytes");
  }
  std::string text(static_cast<size_t>(st.st_size), '\0');
  size_t got = 0;
  while (got < text.size()) {
    const ssize_t n = ::read(fd, text.data() + got, text.size() - got);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    got += static_cast<size_t>(n);
  }
  ::close(fd);
  if (got != text.size()) return io_error("cannot read policy file", path);
  auto policy = core::decode_policy(text);
  if (!policy) return Unexpected(policy.error().code, "policy file " + path + ": " + policy.error().message);
  return std::optional<core::OwnerPolicy>(std::move(*policy));
}

Status save_policy_file(const std::string& path, const core::OwnerPolicy& policy) {
  DCHECK(policy.validate().has_value());
  namespace fs = std::filesystem;
  const fs::path dir = fs::path(path).parent_path();
  std::error_code ec;
  if (!dir.empty()) {
    fs::create_directories(dir, ec);
    if (ec) return Unexpected(ErrorCode::kIo, "cannot make the directory " + dir.string() + ": " + ec.message());
  }
  const std::string text = core::encode_policy(policy) + "\n";
  const std::string tmp = path + ".new";
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) return io_error("cannot create policy file", tmp);
  const bool written = ::write(fd, text.data(), text.size()) == static_cast<ssize_t>(text.size()) && ::fsync(fd) == 0;
  ::close(fd);
  if (!written || ::rename(tmp.c_str(), path.c_str()) != 0) {
    const Unexpected e = io_error("cannot write policy file", path);
    ::unlink(tmp.c_str());
    return e;
  }
  return {};
}

}  // namespace idlefleet::agent
