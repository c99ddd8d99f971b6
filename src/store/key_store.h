// KeyStore: client API keys, their usage, and stored responses for
// Idempotency-Key replays. In SQLite (`<data_dir>/keys.db`) by default, or in
// PostgreSQL when opened on a postgresql:// URL.
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
// reader when another connection has committed a change, so the coordinator
// reloads its keys only when something changed. SQLite: PRAGMA data_version,
// which changes with any commit by another connection. PostgreSQL: the
// one-row counter `key_changes.version`, incremented in the same transaction
// as every change the store makes to api_keys (create, a revoke that revokes,
// usage that updates a key; stored responses are not keys and leave it
// alone), less the increments this store made itself: so it changes when
// another connection committed a change to the keys, and never for the
// store's own. Either way a value is only compared with earlier values from
// the same store object.
//
// Idempotent responses: one row per (scope, key) with the SHA-256 of the
// request body, the status and the body returned; put_response() refuses one
// over kIdempotencyResponseBytesMax (the caller then simply does not store
// it), and prune_responses() deletes rows older than a cutoff and the oldest
// beyond kIdempotencyEntriesMax.
//
// Durability: SQLite with WAL and synchronous=FULL: usage is what clients are
// billed by. PostgreSQL: as durable as the server is configured.
//
// Schema: numbered migrations, as in job_store.h: SQLite records them in
// `schema_version`, PostgreSQL in `idlefleet_schema` (store "keys", one
// migration: the whole schema below); open() migrates and refuses a newer
// database (kUnsupported). Column by column (SQLite type / PostgreSQL type
// where it differs; PostgreSQL's TEXT is COLLATE "C", bytewise as SQLite's):
//   api_keys: id TEXT PRIMARY KEY ("key_" + 24 hex) | name TEXT/BYTEA |
//     secret_sha256 BLOB/BYTEA (32 bytes, UNIQUE) | created_at INTEGER/BIGINT
//     (TimeMs) | revoked_at INTEGER/BIGINT (TimeMs, 0 = active) |
//     requests_per_minute, tokens_per_minute INTEGER/BIGINT |
//     spend_limit_micros INTEGER/BIGINT (0 = none) | requests, prompt_tokens,
//     completion_tokens, spend_micros INTEGER/BIGINT (>= 0) | scopes TEXT
//     ("*" or kScopes names joined by ','; SQLite migration 2)
//   idempotency: scope TEXT/BYTEA | idem_key TEXT/BYTEA | request_sha256
//     BLOB/BYTEA (32) | status INTEGER/BIGINT | body TEXT/BYTEA | created_at
//     INTEGER/BIGINT; PRIMARY KEY (scope, idem_key)
//   key_changes (PostgreSQL only): one BOOLEAN PRIMARY KEY (true: one row) |
//     version BIGINT (see data_version above)
// A key's name, and the scope, key and body of a response, are BYTEA in
// PostgreSQL, so that both stores keep any bytes (PostgreSQL's TEXT refuses
// NUL and text that is not UTF-8). Every row read is validated (a hand-edited
// or damaged database gives kCorrupt naming the row, never a crash).
//
// Thread-safety: none, as JobStore: one thread at a time. Separate processes
// may open the same database (the CLI while the coordinator runs): SQLite
// writers wait up to kKeyStoreBusyTimeoutMs for each other; PostgreSQL's key
// writers take the key_changes row first, so they run one at a time as
// SQLite's do.
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

// The key store's interface; SqliteKeyStore (store/sqlite_key_store.h) and
// PgKeyStore (store/pg_key_store.h) implement it with the same behaviour, and
// the same tests run against both.
class KeyStore {
 public:
  // Opens the store at `location`: a postgresql:// URL (store/pg_db.h) or a
  // SQLite file, created if absent, migrated either way; ":memory:" for
  // tests. Errors as JobStore::open(): kCorrupt for a file that is not
  // SQLite, kIo, kUnsupported for a newer schema.
  static Result<std::unique_ptr<KeyStore>> open(const std::string& location);

  virtual ~KeyStore() = default;

  // A new key with a fresh id and secret. kInvalidArgument for a bad name,
  // kOutOfRange for limits beyond their maxima or kKeysMax keys already.
  virtual Result<CreatedKey> create(const NewKey& request, core::TimeMs now) = 0;

  // Every key, oldest first (created_at, then id).
  virtual Result<std::vector<ApiKey>> list() = 0;

  // The key with this id, or nullopt (an id that is not a key id too).
  virtual Result<std::optional<ApiKey>> get(std::string_view id) = 0;

  // Marks the key revoked at `now`; the key it was (revoked_at is the first
  // revocation's time when it already was). kNotFound for an unknown id.
  virtual Result<ApiKey> revoke(std::string_view id, core::TimeMs now) = 0;

  // Adds every delta in one transaction (all or none). Deltas for ids that
  // no longer exist are skipped.
  virtual Status add_usage(std::span<const UsageDelta> deltas) = 0;

  // Changes when another connection commits a change (see the top of this
  // file); the store's own commits leave it as it was.
  virtual Result<int64_t> data_version() = 0;

  // The stored response for (scope, key), or nullopt.
  virtual Result<std::optional<StoredResponse>> get_response(std::string_view scope, std::string_view idem_key) = 0;
  // Stores (or replaces) it. kOutOfRange for a scope, key or body over its limit.
  virtual Status put_response(std::string_view scope, std::string_view idem_key, const StoredResponse& response) = 0;
  // Deletes responses created before `before`, then the oldest beyond
  // kIdempotencyEntriesMax (created_at, then scope and key, descending, are
  // kept). Returns how many were deleted.
  virtual Result<uint64_t> prune_responses(core::TimeMs before) = 0;

  // What the store was opened on: the path as given to open(), or the URL
  // without its password.
  virtual const std::string& location() const = 0;

 protected:
  KeyStore() = default;
  KeyStore(const KeyStore&) = delete;
  KeyStore& operator=(const KeyStore&) = delete;
};

// What both implementations share (store/key_store.cc).
namespace key_rows {

// The api_keys columns in the order both stores read them.
inline constexpr const char* kKeyColumns =
    "id, name, secret_sha256, created_at, revoked_at, requests_per_minute, tokens_per_minute, spend_limit_micros, "
    "requests, prompt_tokens, completion_tokens, spend_micros, scopes";

// create()'s checks (kInvalidArgument, kOutOfRange), then a new key: a fresh
// id and secret, the secret's hash, the scopes normalised.
Result<CreatedKey> new_key(const NewKey& request, core::TimeMs now);
// kOutOfRange when the store already holds `keys` >= kKeysMax keys.
Status check_key_count(uint64_t keys, const std::string& label);
// A key row read back, its other fields already in `k` (kCorrupt naming the
// key and column). `numbers` are the columns created_at .. spend_micros in
// the table's order.
Status check_key_row(ApiKey& k, std::string_view secret_sha256, std::span<const int64_t, 9> numbers);
// The names of those nine columns, for messages.
extern const char* const kNumberColumns[9];
// A usage increment as written: saturated far below 2^63, so that a sum
// never wraps even in a database edited by hand.
int64_t usage_increment(uint64_t add);
// put_response()'s bounds (kOutOfRange).
Status check_response(std::string_view scope, std::string_view idem_key, const StoredResponse& response);
// A stored response read back (kCorrupt, naming the store by `label`).
Result<StoredResponse> response_row(std::string_view request_sha256, int64_t status, std::string body,
                                    core::TimeMs created_at, const std::string& label);

}  // namespace key_rows

}  // namespace idlefleet::store
