#include "store/key_store.h"

#include <sodium.h>

#include <algorithm>
#include <cstdlib>
#include <mutex>
#include <utility>
#include <vector>

#include "store/open.h"
#include "store/pg_db.h"
#include "store/pg_key_store.h"
#include "store/sqlite_key_store.h"

namespace idlefleet::store {
namespace {

void sodium_ready() {
  static std::once_flag once;
  std::call_once(once, [] {
    if (sodium_init() < 0) std::abort();  // no entropy source: no secret can be made
  });
}

std::string hex(const unsigned char* p, size_t n) {
  static const char kDigits[] = "0123456789abcdef";
  std::string out;
  out.reserve(2 * n);
  for (size_t i = 0; i < n; ++i) {
    out.push_back(kDigits[p[i] >> 4]);
    out.push_back(kDigits[p[i] & 15]);
  }
  return out;
}

std::string random_hex(size_t bytes) {
  sodium_ready();
  std::vector<unsigned char> b(bytes);
  randombytes_buf(b.data(), b.size());
  std::string out = hex(b.data(), b.size());
  sodium_memzero(b.data(), b.size());
  return out;
}

bool lower_hex(std::string_view s) {
  for (char c : s) {
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  }
  return true;
}

Status check_name(std::string_view name) {
  if (name.empty()) return Unexpected(ErrorCode::kInvalidArgument, "a key's name must not be empty");
  if (name.size() > kKeyNameBytesMax) {
    return Unexpected(ErrorCode::kInvalidArgument, "a key's name is at most " + std::to_string(kKeyNameBytesMax) +
                                                       " bytes, this one " + std::to_string(name.size()));
  }
  for (char c : name) {
    const auto u = static_cast<unsigned char>(c);
    if (u < 0x20 || u == 0x7f) {
      return Unexpected(ErrorCode::kInvalidArgument, "a key's name must not contain control characters");
    }
  }
  return {};
}

}  // namespace

Result<std::unique_ptr<KeyStore>> KeyStore::open(const std::string& location) {
  sodium_ready();
  return open_store_at<KeyStore, PgKeyStore, SqliteKeyStore>(location);
}

Sha256 sha256(std::string_view bytes) {
  sodium_ready();
  Sha256 out{};
  crypto_hash_sha256(out.data(), reinterpret_cast<const unsigned char*>(bytes.data()), bytes.size());
  return out;
}

bool secret_well_formed(std::string_view text) {
  return text.size() == kSecretBytes && text.substr(0, kSecretPrefix.size()) == kSecretPrefix &&
         lower_hex(text.substr(kSecretPrefix.size()));
}

Result<std::string> normalize_scopes(std::string_view text) {
  auto bad = [&](const std::string& why) {
    return Unexpected(ErrorCode::kInvalidArgument, "scopes: " + why + "; give \"*\" or a comma-separated list of " +
                                                       std::string(kScopeNames));
  };
  if (text.size() > kScopesBytesMax) return bad("too long");
  if (text == "*") return std::string("*");
  std::vector<bool> wanted(kScopes.size(), false);
  size_t at = 0;
  while (at <= text.size()) {
    size_t end = text.find(',', at);
    if (end == std::string_view::npos) end = text.size();
    std::string_view name = text.substr(at, end - at);
    while (!name.empty() && name.front() == ' ') name.remove_prefix(1);
    while (!name.empty() && name.back() == ' ') name.remove_suffix(1);
    const auto it = std::find(kScopes.begin(), kScopes.end(), name);
    if (it == kScopes.end()) {
      return bad(name.empty() ? std::string("an empty name") : "unknown scope '" + std::string(name) + "'");
    }
    wanted[static_cast<size_t>(it - kScopes.begin())] = true;
    at = end + 1;
  }
  std::string out;
  for (size_t i = 0; i < kScopes.size(); ++i) {
    if (!wanted[i]) continue;
    if (!out.empty()) out += ',';
    out += kScopes[i];
  }
  return out;
}

bool ApiKey::allows(std::string_view scope) const {
  if (scopes == "*") return scope != kScopeAdmin;
  size_t at = 0;
  while (at <= scopes.size()) {
    size_t end = scopes.find(',', at);
    if (end == std::string::npos) end = scopes.size();
    if (std::string_view(scopes).substr(at, end - at) == scope) return true;
    at = end + 1;
  }
  return false;
}

bool key_id_well_formed(std::string_view text) {
  return text.size() == kKeyIdBytes && text.substr(0, kKeyIdPrefix.size()) == kKeyIdPrefix &&
         lower_hex(text.substr(kKeyIdPrefix.size()));
}


namespace key_rows {

const char* const kNumberColumns[9] = {"created_at",        "revoked_at",         "requests_per_minute",
                                       "tokens_per_minute", "spend_limit_micros", "requests",
                                       "prompt_tokens",     "completion_tokens",  "spend_micros"};

Result<CreatedKey> new_key(const NewKey& request, core::TimeMs now) {
  IF_RETURN_IF_ERROR(check_name(request.name));
  if (request.limits.requests_per_minute > core::kRateLimitPerMinuteMax ||
      request.limits.tokens_per_minute > core::kRateLimitPerMinuteMax) {
    return Unexpected(ErrorCode::kOutOfRange,
                      "a rate limit is at most " + std::to_string(core::kRateLimitPerMinuteMax) + " per minute");
  }
  if (request.spend_limit_micros > kSpendLimitMicrosMax) {
    return Unexpected(ErrorCode::kOutOfRange,
                      "the spend limit is at most " + std::to_string(kSpendLimitMicrosMax) + " micro-units");
  }
  auto scopes = normalize_scopes(request.scopes);
  if (!scopes) return Unexpected(scopes.error());
  CreatedKey out;
  out.key.scopes = *scopes;
  out.key.id = std::string(kKeyIdPrefix) + random_hex((kKeyIdBytes - kKeyIdPrefix.size()) / 2);
  out.secret = std::string(kSecretPrefix) + random_hex(kSecretRandomBytes);
  out.key.name = request.name;
  out.key.secret_sha256 = sha256(out.secret);
  out.key.created_at = now;
  out.key.limits = request.limits;
  out.key.spend_limit_micros = request.spend_limit_micros;
  return out;
}

Status check_key_count(uint64_t keys, const std::string& label) {
  if (keys < kKeysMax) return {};
  return Unexpected(ErrorCode::kOutOfRange,
                    label + " already holds " + std::to_string(kKeysMax) + " keys, the most it may");
}

Status check_key_row(ApiKey& k, std::string_view secret_sha256, std::span<const int64_t, 9> v) {
  auto corrupt = [&](const char* column, const std::string& why) {
    return Unexpected(ErrorCode::kCorrupt, "key '" + k.id.substr(0, 64) + "': column " + column + " " + why);
  };
  if (!key_id_well_formed(k.id)) return corrupt("id", "is not a key id");
  if (!check_name(k.name)) return corrupt("name", "is not a valid name");
  if (secret_sha256.size() != k.secret_sha256.size()) return corrupt("secret_sha256", "is not a 32-byte blob");
  std::copy(secret_sha256.begin(), secret_sha256.end(), k.secret_sha256.begin());
  for (size_t i = 0; i < v.size(); ++i) {
    if (v[i] < 0) return corrupt(kNumberColumns[i], "is negative");
  }
  const uint64_t rate_max = core::kRateLimitPerMinuteMax;
  if (static_cast<uint64_t>(v[2]) > rate_max) return corrupt("requests_per_minute", "is out of range");
  if (static_cast<uint64_t>(v[3]) > rate_max) return corrupt("tokens_per_minute", "is out of range");
  if (static_cast<uint64_t>(v[4]) > kSpendLimitMicrosMax) return corrupt("spend_limit_micros", "is out of range");
  k.created_at = v[0];
  k.revoked_at = v[1];
  k.limits.requests_per_minute = static_cast<uint64_t>(v[2]);
  k.limits.tokens_per_minute = static_cast<uint64_t>(v[3]);
  k.spend_limit_micros = static_cast<uint64_t>(v[4]);
  k.usage = {static_cast<uint64_t>(v[5]), static_cast<uint64_t>(v[6]), static_cast<uint64_t>(v[7]),
             static_cast<uint64_t>(v[8])};
  if (!normalize_scopes(k.scopes)) return corrupt("scopes", "is not a list of scopes");
  return {};
}

int64_t usage_increment(uint64_t add) {
  // Each increment is bounded far below 2^62 by the caller's limits; the sum
  // saturates rather than wrapping if a database was edited by hand.
  constexpr uint64_t kCap = uint64_t{1} << 62;
  return static_cast<int64_t>(std::min(add, kCap));
}

Status check_response(std::string_view scope, std::string_view idem_key, const StoredResponse& response) {
  if (scope.empty() || scope.size() > kIdempotencyScopeBytesMax || idem_key.empty() ||
      idem_key.size() > kIdempotencyKeyBytesMax || response.body.size() > kIdempotencyResponseBytesMax) {
    return Unexpected(ErrorCode::kOutOfRange, "idempotent response: scope, key or body out of its bounds");
  }
  return {};
}

Result<StoredResponse> response_row(std::string_view request_sha256, int64_t status, std::string body,
                                    core::TimeMs created_at, const std::string& label) {
  StoredResponse r;
  if (request_sha256.size() != r.request_sha256.size()) {
    return Unexpected(ErrorCode::kCorrupt, label + ": a stored idempotent response is damaged");
  }
  std::copy(request_sha256.begin(), request_sha256.end(), r.request_sha256.begin());
  if (status < 200 || status > 599) {
    return Unexpected(ErrorCode::kCorrupt, label + ": a stored response has status " + std::to_string(status));
  }
  r.status = static_cast<int>(status);
  r.body = std::move(body);
  r.created_at = created_at;
  return r;
}

}  // namespace key_rows
}  // namespace idlefleet::store
