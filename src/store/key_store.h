// KeyStore: client API keys, their usage, and stored responses for
// Idempotency-Key replays, in SQLite (`<data_dir>/keys.db`).
//
// A key's secret ("sk-idf-" + 64 hex digits: 32 bytes from libsodium's
// randombytes) is returned once, by create(), and never stored: the file holds
// its SHA-256 only, and requests are matched by that hash. A 256-bit random
// secret needs no salt or slow hash: nobody can search its space from the hash.
//
// Usage (requests, prompt and completion tokens, spend) is added with
// add_usage(), one transaction for a batch of keys, as increments, so that a
// revoke written by another process (`idlefleet admin keys revoke`) is never
// overwritten by the coordinator's usage updates. data_version() tells a
// reader when another connection has committed, so the coordinator reloads
// its keys only when something changed.
//
// Idempotent responses: one row per (scope, key) with the SHA-256 of the
// request body, the status and the body returned; put_response() refuses one
// over kIdempotencyResponseBytesMax (the caller then simply does not store
// it), and prune_responses() deletes rows older than a cutoff and the oldest
// beyond kIdempotencyEntriesMax.
//
// Durability: WAL with synchronous=FULL: usage is what clients are billed by.
//
// Schema: `schema_version` with one row per migration applied, as in
// job_store.h; open() migrates and refuses a newer file (kUnsupported).
//   api_keys: id TEXT PRIMARY KEY ("key_" + 24 hex) | name TEXT |
//     secret_sha256 BLOB (32 bytes, UNIQUE) | created_at INTEGER (TimeMs) |
//     revoked_at INTEGER (TimeMs, 0 = active) | requests_per_minute INTEGER |
//     tokens_per_minute INTEGER | spend_limit_micros INTEGER (0 = none) |
//     requests, prompt_tokens, completion_tokens, spend_micros INTEGER (>= 0) |
//     scopes TEXT ("*" or kScopes names joined by ','; migration 2)
//   idempotency: scope TEXT | idem_key TEXT | request_sha256 BLOB (32) |
//     status INTEGER | body TEXT | created_at INTEGER; PRIMARY KEY (scope, idem_key)
// Every row read is validated (a hand-edited or damaged file gives kCorrupt
// naming the row, never a crash).
//
// Thread-safety: none, as JobStore: one thread at a time. Separate processes
// may open the same file (the CLI while the coordinator runs): writers wait up
// to kKeyStoreBusyTimeoutMs for each other.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "common/result.h"
#include "core/rate_limit.h"
#include "core/time.h"

struct sqlite3;
struct sqlite3_stmt;

namespace idlefleet::store {

inline constexpr std::string_view kSecretPrefix = "sk-idf-";
inline constexpr size_t kSecretRandomBytes = 32;
inline constexpr size_t kSecretBytes = kSecretPrefix.size() + 2 * kSecretRandomBytes;
inline constexpr std::string_view kKeyIdPrefix = "key_";
inline constexpr size_t kKeyIdBytes = kKeyIdPrefix.size() + 24;
inline constexpr size_t kKeyNameBytesMax = 128;
inline constexpr size_t kKeysMax = 10000;
inline constexpr uint64_t kSpendLimitMicrosMax = uint64_t{1} << 53;  // 9e9 units of money
inline constexpr size_t kIdempotencyKeyBytesMax = 255;
inline constexpr size_t kIdempotencyScopeBytesMax = 128;
inline constexpr size_t kIdempotencyResponseBytesMax = 1u << 20;
inline constexpr size_t kIdempotencyEntriesMax = 10000;
inline constexpr int kKeyStoreBusyTimeoutMs = 5000;
inline constexpr int kKeySchemaVersion = 2;

// What a key may call (ApiKey::scopes): the client API's route groups.
//   models       GET /v1/models, /v1/models/{id}
//   completions  POST /v1/chat/completions, /v1/completions (and batches of them)
//   embeddings   POST /v1/embeddings (and batches of them)
//   files        /v1/files...
//   batches      /v1/batches... (a batch also needs its endpoint's scope)
//   admin        the operator's dashboard data (GET /v1/dashboard/events)
// A call outside a key's scopes is answered 403. "*" grants every scope but
// admin, which must be named: a client's key, made with the default scopes,
// does not open the operator's view of the fleet.
inline constexpr std::array<std::string_view, 6> kScopes = {"models", "completions", "embeddings", "files", "batches",
                                                            "admin"};
inline constexpr std::string_view kScopeNames = "models, completions, embeddings, files, batches, admin";
inline constexpr std::string_view kScopeAdmin = "admin";
inline constexpr size_t kScopesBytesMax = 256;

using Sha256 = std::array<uint8_t, 32>;

// SHA-256 (libsodium) of any bytes: a secret, a request body.
Sha256 sha256(std::string_view bytes);

// True if `text` has the shape of a secret: the prefix and 64 lower-case hex digits.
bool secret_well_formed(std::string_view text);
// A scope list as a user writes it ("*", or names from kScopes separated by
// commas, spaces around a name allowed) in its stored form (kScopes order, no
// repeats); kInvalidArgument naming the bad part otherwise.
Result<std::string> normalize_scopes(std::string_view text);

// True if `text` has the shape of a key id.
bool key_id_well_formed(std::string_view text);

struct KeyUsage {
  uint64_t requests = 0;
  uint64_t prompt_tokens = 0;
  uint64_t completion_tokens = 0;
  uint64_t spend_micros = 0;

  bool operator==(const KeyUsage&) const = default;
};

struct ApiKey {
  std::string id;
  std::string name;
  Sha256 secret_sha256{};
  core::TimeMs created_at = 0;
  core::TimeMs revoked_at = 0;  // 0: active
  core::RateLimits limits;
  uint64_t spend_limit_micros = 0;  // 0: none
  KeyUsage usage;
  std::string scopes = "*";  // "*" or kScopes names joined by ',' in kScopes order

  bool revoked() const { return revoked_at != 0; }
  // True if the key may call routes of `scope` (one of kScopes).
  bool allows(std::string_view scope) const;
  bool operator==(const ApiKey&) const = default;
};

// What create() asks for.
struct NewKey {
  std::string name;  // 1..kKeyNameBytesMax bytes, no control characters
  core::RateLimits limits;  // each <= core::kRateLimitPerMinuteMax
  uint64_t spend_limit_micros = 0;  // <= kSpendLimitMicrosMax
  std::string scopes = "*";  // as normalize_scopes() takes
};

struct CreatedKey {
  ApiKey key;
  std::string secret;  // shown once; not recoverable
};

// A usage increment for one key.
struct UsageDelta {
  std::string key_id;
  KeyUsage add;
};

struct StoredResponse {
  Sha256 request_sha256{};
  int status = 0;
  std::string body;
  core::TimeMs created_at = 0;
};

class KeyStore {
 public:
  // Opens (creating if absent) the database at `path`; ":memory:" for tests.
  // Errors as JobStore::open(): kCorrupt for a file that is not SQLite, kIo,
  // kUnsupported for a newer schema.
  static Result<std::unique_ptr<KeyStore>> open(const std::string& path);

  ~KeyStore();
  KeyStore(const KeyStore&) = delete;
  KeyStore& operator=(const KeyStore&) = delete;

  // A new key with a fresh id and secret. kInvalidArgument for a bad name,
  // kOutOfRange for limits beyond their maxima or kKeysMax keys already.
  Result<CreatedKey> create(const NewKey& request, core::TimeMs now);

  // Every key, oldest first (created_at, then id).
  Result<std::vector<ApiKey>> list();

  // The key with this id, or nullopt.
  Result<std::optional<ApiKey>> get(std::string_view id);

  // Marks the key revoked at `now`; the key it was (revoked_at is the first
  // revocation's time when it already was). kNotFound for an unknown id.
  Result<ApiKey> revoke(std::string_view id, core::TimeMs now);

  // Adds every delta in one transaction (all or none). Deltas for ids that
  // no longer exist are skipped.
  Status add_usage(std::span<const UsageDelta> deltas);

  // SQLite's data_version: changes when another connection commits.
  Result<int64_t> data_version();

  // The stored response for (scope, key), or nullopt.
  Result<std::optional<StoredResponse>> get_response(std::string_view scope, std::string_view idem_key);
  // Stores (or replaces) it. kOutOfRange for a scope, key or body over its limit.
  Status put_response(std::string_view scope, std::string_view idem_key, const StoredResponse& response);
  // Deletes responses created before `before`, then the oldest beyond
  // kIdempotencyEntriesMax. Returns how many were deleted.
  Result<uint64_t> prune_responses(core::TimeMs before);

  const std::string& path() const { return path_; }

 private:
  KeyStore(std::string path, sqlite3* db);
  Status exec(const char* sql, const char* what);
  Unexpected sqlite_error(int rc, const std::string& what) const;
  Result<std::vector<ApiKey>> read_keys(sqlite3_stmt* stmt);

  std::string path_;
  sqlite3* db_ = nullptr;
};

}  // namespace idlefleet::store
