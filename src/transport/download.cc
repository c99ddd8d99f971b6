#include "transport/download.h"

#include <curl/curl.h>
#include <sodium.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <mutex>

namespace idlefleet::transport {

namespace {

std::string to_hex(const unsigned char* bytes, size_t n) {
  static const char kDigits[] = "0123456789abcdef";
  std::string out(n * 2, '0');
  for (size_t i = 0; i < n; ++i) {
    out[2 * i] = kDigits[bytes[i] >> 4];
    out[2 * i + 1] = kDigits[bytes[i] & 15];
  }
  return out;
}

void init_libraries() {
  static std::once_flag once;
  std::call_once(once, [] {
    curl_global_init(CURL_GLOBAL_DEFAULT);
    if (sodium_init() < 0) std::abort();  // no entropy source: nothing secure can work
  });
}

struct Transfer {
  std::FILE* out = nullptr;
  crypto_hash_sha256_state sha;
  uint64_t bytes = 0;
  uint64_t bytes_max = 0;
  bool too_large = false;
  const DownloadOptions* options = nullptr;
};

size_t on_data(char* ptr, size_t size, size_t n, void* user) {
  auto* t = static_cast<Transfer*>(user);
  const size_t len = size * n;
  if (t->bytes + len > t->bytes_max) {
    t->too_large = true;
    return 0;  // aborts the transfer
  }
  t->bytes += len;
  crypto_hash_sha256_update(&t->sha, reinterpret_cast<const unsigned char*>(ptr), len);
  return std::fwrite(ptr, 1, len, t->out);
}

int on_progress(void* user, curl_off_t total, curl_off_t now, curl_off_t, curl_off_t) {
  auto* t = static_cast<Transfer*>(user);
  if (total > 0 && static_cast<uint64_t>(total) > t->bytes_max) {
    t->too_large = true;
    return 1;
  }
  if (t->options->progress) t->options->progress(static_cast<uint64_t>(now), static_cast<uint64_t>(total));
  return 0;
}

}  // namespace

std::string sha256_hex(std::string_view bytes) {
  init_libraries();
  unsigned char digest[crypto_hash_sha256_BYTES];
  crypto_hash_sha256(digest, reinterpret_cast<const unsigned char*>(bytes.data()), bytes.size());
  return to_hex(digest, sizeof digest);
}

Result<std::string> sha256_file(const std::string& path) {
  init_libraries();
  std::FILE* f = std::fopen(path.c_str(), "rb");
  if (f == nullptr) return Unexpected(ErrorCode::kNotFound, "cannot open " + path);
  crypto_hash_sha256_state st;
  crypto_hash_sha256_init(&st);
  std::vector<unsigned char> buf(1 << 20);
  size_t n = 0;
  while ((n = std::fread(buf.data(), 1, buf.size(), f)) > 0) crypto_hash_sha256_update(&st, buf.data(), n);
  const bool failed = std::ferror(f) != 0;
  std::fclose(f);
  if (failed) return Unexpected(ErrorCode::kIo, "error reading " + path);
  unsigned char digest[crypto_hash_sha256_BYTES];
  crypto_hash_sha256_final(&st, digest);
  return to_hex(digest, sizeof digest);
}

Status download_file(const std::string& url, const std::string& path, const DownloadOptions& options) {
  init_libraries();
  std::error_code ec;
  const auto parent = std::filesystem::path(path).parent_path();
  if (!parent.empty()) std::filesystem::create_directories(parent, ec);
  const std::string part = path + ".part." + std::to_string(::getpid());
  Transfer t;
  t.out = std::fopen(part.c_str(), "wb");
  if (t.out == nullptr) return Unexpected(ErrorCode::kIo, "cannot write " + part);
  crypto_hash_sha256_init(&t.sha);
  t.bytes_max = options.bytes_max;
  t.options = &options;
  CURL* curl = curl_easy_init();
  if (curl == nullptr) {
    std::fclose(t.out);
    std::filesystem::remove(part, ec);
    return Unexpected(ErrorCode::kInternal, "libcurl failed to initialise");
  }
  curl_easy_setopt(curl, CURLOPT_URL, url.c_str());
  curl_easy_setopt(curl, CURLOPT_FOLLOWLOCATION, 1L);
  curl_easy_setopt(curl, CURLOPT_MAXREDIRS, 10L);
  curl_easy_setopt(curl, CURLOPT_FAILONERROR, 1L);
  curl_easy_setopt(curl, CURLOPT_CONNECTTIMEOUT_MS, static_cast<long>(options.connect_timeout_ms));
  curl_easy_setopt(curl, CURLOPT_LOW_SPEED_LIMIT, 1024L);  // abort below 1 KB/s ...
  curl_easy_setopt(curl, CURLOPT_LOW_SPEED_TIME, 60L);     // ... sustained for a minute
  curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, on_data);
  curl_easy_setopt(curl, CURLOPT_WRITEDATA, &t);
  curl_easy_setopt(curl, CURLOPT_NOPROGRESS, 0L);
  curl_easy_setopt(curl, CURLOPT_XFERINFOFUNCTION, on_progress);
  curl_easy_setopt(curl, CURLOPT_XFERINFODATA, &t);
  const CURLcode rc = curl_easy_perform(curl);
  long http_status = 0;
  curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &http_status);
  curl_easy_cleanup(curl);
  const bool closed = std::fclose(t.out) == 0;
  auto fail = [&](ErrorCode code, std::string why) -> Status {
    std::filesystem::remove(part, ec);
    return Unexpected(code, "download of " + url + " failed: " + why);
  };
  if (t.too_large) return fail(ErrorCode::kOutOfRange, "larger than " + std::to_string(options.bytes_max) + " bytes");
  if (rc != CURLE_OK) {
    std::string why = curl_easy_strerror(rc);
    if (http_status >= 400) why += " (HTTP " + std::to_string(http_status) + ")";
    return fail(rc == CURLE_HTTP_RETURNED_ERROR && http_status == 404 ? ErrorCode::kNotFound : ErrorCode::kIo, why);
  }
  if (!closed) return fail(ErrorCode::kIo, "write error on " + part);
  if (!options.sha256_hex.empty()) {
    unsigned char digest[crypto_hash_sha256_BYTES];
    crypto_hash_sha256_final(&t.sha, digest);
    const std::string got = to_hex(digest, sizeof digest);
    if (got != options.sha256_hex) {
      return fail(ErrorCode::kCorrupt, "SHA-256 is " + got + ", expected " + options.sha256_hex);
    }
  }
  std::filesystem::rename(part, path, ec);
  if (ec) return fail(ErrorCode::kIo, "cannot move " + part + " to " + path + ": " + ec.message());
  return {};
}

}  // namespace idlefleet::transport
