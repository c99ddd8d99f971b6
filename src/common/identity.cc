#include "common/identity.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <string_view>

namespace idlefleet {

namespace {

constexpr size_t kKeyFileBytes = 2 * kEd25519SecretKeyBytes + 1;

Unexpected io_error(const std::string& what, const std::string& path) {
  return Unexpected(ErrorCode::kIo, what + " " + path + ": " + std::strerror(errno));
}

Result<Ed25519Keypair> read_key(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) return io_error("cannot stat key file", path);
  if (!S_ISREG(st.st_mode)) return Unexpected(ErrorCode::kCorrupt, "key file " + path + " is not a regular file");
  if ((st.st_mode & 077) != 0) {
    char mode[8];
    std::snprintf(mode, sizeof mode, "%03o", static_cast<unsigned>(st.st_mode & 0777));
    return Unexpected(ErrorCode::kInvalidArgument, "key file " + path + " has mode " + mode +
                                                       ": others may read it; `chmod 600` it (or delete it to make "
                                                       "a new identity, which must then be enrolled again)");
  }
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return io_error("cannot open key file", path);
  char buf[kKeyFileBytes + 1];
  const ssize_t n = ::read(fd, buf, sizeof buf);
  ::close(fd);
  if (n < 0) return io_error("cannot read key file", path);
  std::string_view text(buf, static_cast<size_t>(n));
  if (!text.empty() && text.back() == '\n') text.remove_suffix(1);
  auto secret = from_hex<kEd25519SecretKeyBytes>(text);
  if (!secret) {
    return Unexpected(ErrorCode::kCorrupt, "key file " + path + " does not hold a key (128 hex digits)");
  }
  Ed25519Keypair k = Ed25519Keypair::from_secret(*secret);
  // The second half of a libsodium secret key is its public key: a file
  // whose halves disagree was damaged.
  if (!std::equal(k.public_key.begin(), k.public_key.end(), secret->begin() + 32)) {
    return Unexpected(ErrorCode::kCorrupt, "key file " + path + " is damaged (its halves disagree)");
  }
  return k;
}

}  // namespace

Result<Ed25519Keypair> load_or_create_key(const std::string& path) {
  namespace fs = std::filesystem;
  std::error_code ec;
  if (fs::exists(path, ec)) return read_key(path);
  const fs::path dir = fs::path(path).parent_path();
  if (!dir.empty()) {
    fs::create_directories(dir, ec);
    if (ec) return Unexpected(ErrorCode::kIo, "cannot make the key directory " + dir.string() + ": " + ec.message());
    ::chmod(dir.c_str(), 0700);
  }
  const Ed25519Keypair k = Ed25519Keypair::generate();
  const std::string text = to_hex(k.secret_key) + "\n";
  // O_EXCL: two agents racing for one identity do not overwrite each other.
  const std::string tmp = path + ".new";
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (fd < 0) return io_error("cannot create key file", tmp);
  const bool written = ::write(fd, text.data(), text.size()) == static_cast<ssize_t>(text.size()) && ::fsync(fd) == 0;
  ::close(fd);
  if (!written) {
    ::unlink(tmp.c_str());
    return io_error("cannot write key file", tmp);
  }
  if (::link(tmp.c_str(), path.c_str()) != 0) {
    ::unlink(tmp.c_str());
    if (errno == EEXIST) return read_key(path);  // another process made it first: use theirs
    return io_error("cannot create key file", path);
  }
  ::unlink(tmp.c_str());
  return k;
}

}  // namespace idlefleet
