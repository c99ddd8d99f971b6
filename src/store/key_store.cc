#include "store/key_store.h"

#include <sodium.h>
#include <sqlite3.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <utility>
#include <vector>

#include "common/check.h"
#include "store/sqlite_db.h"

namespace idlefleet::store {
namespace {

// Migration N (1-based) is kMigrations[N - 1]; shipped entries never change.
constexpr const char* kMigrations[] = {
    R"sql(
CREATE TABLE api_keys (
  id TEXT PRIMARY KEY NOT NULL,
  name TEXT NOT NULL,
  secret_sha256 BLOB NOT NULL UNIQUE,
  created_at INTEGER NOT NULL,
  revoked_at INTEGER NOT NULL,
  requests_per_minute INTEGER NOT NULL,
  tokens_per_minute INTEGER NOT NULL,
  spend_limit_micros INTEGER NOT NULL,
  requests INTEGER NOT NULL,
  prompt_tokens INTEGER NOT NULL,
  completion_tokens INTEGER NOT NULL,
  spend_micros INTEGER NOT NULL
) STRICT;
CREATE TABLE idempotency (
  scope TEXT NOT NULL,
  idem_key TEXT NOT NULL,
  request_sha256 BLOB NOT NULL,
  status INTEGER NOT NULL,
  body TEXT NOT NULL,
  created_at INTEGER NOT NULL,
  PRIMARY KEY (scope, idem_key)
) STRICT;
CREATE INDEX idempotency_by_created ON idempotency(created_at);
)sql",
    // 2: what each key may call ("*": everything, as keys made before).
    R"sql(
ALTER TABLE api_keys ADD COLUMN scopes TEXT NOT NULL DEFAULT '*';
)sql",
};
static_assert(std::size(kMigrations) == kKeySchemaVersion, "one migration per schema version");

constexpr const char* kKeyColumns =
    "id, name, secret_sha256, created_at, revoked_at, requests_per_minute, tokens_per_minute, spend_limit_micros, "
    "requests, prompt_tokens, completion_tokens, spend_micros, scopes";

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

// Resets a statement when the scope ends; finalizes it too when it owns it.
class Stmt {
 public:
  Stmt() = default;
  ~Stmt() { sqlite3_finalize(stmt_); }
  Stmt(const Stmt&) = delete;
  Stmt& operator=(const Stmt&) = delete;
  sqlite3_stmt** out() { return &stmt_; }
  sqlite3_stmt* get() const { return stmt_; }
  // Ends the statement's read, so that a COMMIT does not see it in progress.
  void reset() { sqlite3_reset(stmt_); }

 private:
  sqlite3_stmt* stmt_ = nullptr;
};

int bind_text(sqlite3_stmt* st, int col, std::string_view v) {
  return sqlite3_bind_text(st, col, v.data(), static_cast<int>(v.size()), SQLITE_TRANSIENT);
}

int bind_hash(sqlite3_stmt* st, int col, const Sha256& h) {
  return sqlite3_bind_blob(st, col, h.data(), static_cast<int>(h.size()), SQLITE_TRANSIENT);
}

Status check_name(std::string_view name) {
  if (name.empty()) return Unexpected(ErrorCode::kInvalidArgument, "a key's name must not be empty");
  if (name.size() > kKeyNameBytesMax) {
    return Unexpected(ErrorCode::kInvalidArgument, "a key's name is at most " + std::to_string(kKeyNameBytesMax) +
                                                       " bytes, this one " + std::to_string(name.size()));
  }
  for (char c : name) {
    const auto u = static_cast<unsigned char>(c);
    if (u < 0x20 || u == 0x7f) return Unexpected(ErrorCode::kInvalidArgument, "a key's name must not contain control characters");
  }
  return {};
}

// Reads one api_keys row (kKeyColumns order).
Status read_key(sqlite3_stmt* st, ApiKey& k) {
  const auto* id_text = sqlite3_column_text(st, 0);
  k.id.assign(id_text != nullptr ? reinterpret_cast<const char*>(id_text) : "",
              static_cast<size_t>(sqlite3_column_bytes(st, 0)));
  auto corrupt = [&](const char* column, const std::string& why) {
    return Unexpected(ErrorCode::kCorrupt, "key '" + k.id.substr(0, 64) + "': column " + column + " " + why);
  };
  if (sqlite3_column_type(st, 0) != SQLITE_TEXT || !key_id_well_formed(k.id)) return corrupt("id", "is not a key id");
  if (sqlite3_column_type(st, 1) != SQLITE_TEXT) return corrupt("name", "is not text");
  k.name.assign(reinterpret_cast<const char*>(sqlite3_column_text(st, 1)),
                static_cast<size_t>(sqlite3_column_bytes(st, 1)));
  if (!check_name(k.name)) return corrupt("name", "is not a valid name");
  if (sqlite3_column_type(st, 2) != SQLITE_BLOB || sqlite3_column_bytes(st, 2) != 32) {
    return corrupt("secret_sha256", "is not a 32-byte blob");
  }
  std::memcpy(k.secret_sha256.data(), sqlite3_column_blob(st, 2), 32);
  int64_t v[9];
  static const char* kNames[] = {"created_at",        "revoked_at",        "requests_per_minute",
                                 "tokens_per_minute", "spend_limit_micros", "requests",
                                 "prompt_tokens",     "completion_tokens", "spend_micros"};
  for (int i = 0; i < 9; ++i) {
    if (sqlite3_column_type(st, 3 + i) != SQLITE_INTEGER) return corrupt(kNames[i], "is not an integer");
    v[i] = sqlite3_column_int64(st, 3 + i);
    if (v[i] < 0) return corrupt(kNames[i], "is negative");
  }
  if (static_cast<uint64_t>(v[2]) > core::kRateLimitPerMinuteMax) return corrupt("requests_per_minute", "is out of range");
  if (static_cast<uint64_t>(v[3]) > core::kRateLimitPerMinuteMax) return corrupt("tokens_per_minute", "is out of range");
  if (static_cast<uint64_t>(v[4]) > kSpendLimitMicrosMax) return corrupt("spend_limit_micros", "is out of range");
  k.created_at = v[0];
  k.revoked_at = v[1];
  k.limits.requests_per_minute = static_cast<uint64_t>(v[2]);
  k.limits.tokens_per_minute = static_cast<uint64_t>(v[3]);
  k.spend_limit_micros = static_cast<uint64_t>(v[4]);
  k.usage = {static_cast<uint64_t>(v[5]), static_cast<uint64_t>(v[6]), static_cast<uint64_t>(v[7]),
             static_cast<uint64_t>(v[8])};
  if (sqlite3_column_type(st, 12) != SQLITE_TEXT) return corrupt("scopes", "is not text");
  k.scopes.assign(reinterpret_cast<const char*>(sqlite3_column_text(st, 12)),
                  static_cast<size_t>(sqlite3_column_bytes(st, 12)));
  if (!normalize_scopes(k.scopes)) return corrupt("scopes", "is not a list of scopes");
  return {};
}

}  // namespace

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

KeyStore::KeyStore(std::string path, sqlite3* db) : path_(std::move(path)), db_(db) {}

KeyStore::~KeyStore() { sqlite3_close_v2(db_); }

Unexpected KeyStore::sqlite_error(int rc, const std::string& what) const {
  return store::sqlite_error(db_, rc, "key store '" + path_ + "'", what);
}

Status KeyStore::exec(const char* sql, const char* what) {
  return sqlite_exec(db_, sql, "key store '" + path_ + "'", what);
}

Result<std::unique_ptr<KeyStore>> KeyStore::open(const std::string& path) {
  sodium_ready();
  sqlite3* db = nullptr;
  IF_RETURN_IF_ERROR(open_database(path, kMigrations, "key store '" + path + "'", &db));
  std::unique_ptr<KeyStore> store(new KeyStore(path, db));
  sqlite3_busy_timeout(db, kKeyStoreBusyTimeoutMs);
  // Keys and usage are money: a committed write survives a power loss too.
  IF_RETURN_IF_ERROR(store->exec("PRAGMA synchronous = FULL", "setting pragmas"));
  return store;
}

Result<CreatedKey> KeyStore::create(const NewKey& request, core::TimeMs now) {
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

  IF_RETURN_IF_ERROR(exec("BEGIN IMMEDIATE", "starting a create"));
  auto insert = [&]() -> Status {
    Stmt count;
    int rc = sqlite3_prepare_v2(db_, "SELECT COUNT(*) FROM api_keys", -1, count.out(), nullptr);
    if (rc == SQLITE_OK) rc = sqlite3_step(count.get());
    if (rc != SQLITE_ROW) return sqlite_error(rc, "counting keys");
    const auto keys = static_cast<uint64_t>(sqlite3_column_int64(count.get(), 0));
    count.reset();
    if (keys >= kKeysMax) {
      return Unexpected(ErrorCode::kOutOfRange, "key store '" + path_ + "' already holds " +
                                                    std::to_string(kKeysMax) + " keys, the most it may");
    }
    Stmt st;
    const std::string sql = std::string("INSERT INTO api_keys (") + kKeyColumns +
                            ") VALUES (?1, ?2, ?3, ?4, 0, ?5, ?6, ?7, 0, 0, 0, 0, ?8)";
    rc = sqlite3_prepare_v2(db_, sql.c_str(), -1, st.out(), nullptr);
    if (rc != SQLITE_OK) return sqlite_error(rc, "preparing a create");
    const int binds[] = {
        bind_text(st.get(), 1, out.key.id),
        bind_text(st.get(), 2, out.key.name),
        bind_hash(st.get(), 3, out.key.secret_sha256),
        sqlite3_bind_int64(st.get(), 4, now),
        sqlite3_bind_int64(st.get(), 5, static_cast<int64_t>(request.limits.requests_per_minute)),
        sqlite3_bind_int64(st.get(), 6, static_cast<int64_t>(request.limits.tokens_per_minute)),
        sqlite3_bind_int64(st.get(), 7, static_cast<int64_t>(request.spend_limit_micros)),
        bind_text(st.get(), 8, out.key.scopes),
    };
    for (int b : binds) {
      if (b != SQLITE_OK) return sqlite_error(b, "binding a new key");
    }
    rc = sqlite3_step(st.get());
    if (rc != SQLITE_DONE) return sqlite_error(rc, "writing a new key");
    return exec("COMMIT", "committing a create");
  };
  if (Status s = insert(); !s) {
    if (sqlite3_get_autocommit(db_) == 0) sqlite3_exec(db_, "ROLLBACK", nullptr, nullptr, nullptr);
    return Unexpected(s.error());
  }
  return out;
}

Result<std::vector<ApiKey>> KeyStore::read_keys(sqlite3_stmt* st) {
  std::vector<ApiKey> out;
  for (;;) {
    const int rc = sqlite3_step(st);
    if (rc == SQLITE_DONE) break;
    if (rc != SQLITE_ROW) return sqlite_error(rc, "reading keys");
    if (out.size() >= kKeysMax) {
      return Unexpected(ErrorCode::kCorrupt, "key store '" + path_ + "': more than " + std::to_string(kKeysMax) + " keys");
    }
    ApiKey k;
    if (Status s = read_key(st, k); !s) {
      return Unexpected(ErrorCode::kCorrupt, "key store '" + path_ + "': " + s.error().message);
    }
    out.push_back(std::move(k));
  }
  return out;
}

Result<std::vector<ApiKey>> KeyStore::list() {
  Stmt st;
  const std::string sql = std::string("SELECT ") + kKeyColumns + " FROM api_keys ORDER BY created_at, id";
  const int rc = sqlite3_prepare_v2(db_, sql.c_str(), -1, st.out(), nullptr);
  if (rc != SQLITE_OK) return sqlite_error(rc, "preparing a list");
  return read_keys(st.get());
}

Result<std::optional<ApiKey>> KeyStore::get(std::string_view id) {
  Stmt st;
  const std::string sql = std::string("SELECT ") + kKeyColumns + " FROM api_keys WHERE id = ?1";
  int rc = sqlite3_prepare_v2(db_, sql.c_str(), -1, st.out(), nullptr);
  if (rc == SQLITE_OK) rc = bind_text(st.get(), 1, id);
  if (rc != SQLITE_OK) return sqlite_error(rc, "preparing a get");
  auto rows = read_keys(st.get());
  if (!rows) return Unexpected(rows.error());
  if (rows->empty()) return std::optional<ApiKey>();
  return std::optional<ApiKey>(std::move(rows->front()));
}

Result<ApiKey> KeyStore::revoke(std::string_view id, core::TimeMs now) {
  Stmt st;
  int rc = sqlite3_prepare_v2(db_, "UPDATE api_keys SET revoked_at = ?2 WHERE id = ?1 AND revoked_at = 0", -1,
                              st.out(), nullptr);
  if (rc == SQLITE_OK) rc = bind_text(st.get(), 1, id);
  if (rc == SQLITE_OK) rc = sqlite3_bind_int64(st.get(), 2, now > 0 ? now : 1);  // 0 means active
  if (rc != SQLITE_OK) return sqlite_error(rc, "preparing a revoke");
  rc = sqlite3_step(st.get());
  if (rc != SQLITE_DONE) return sqlite_error(rc, "revoking a key");
  auto key = get(id);
  if (!key) return Unexpected(key.error());
  if (!key->has_value()) return Unexpected(ErrorCode::kNotFound, "no key '" + std::string(id.substr(0, 64)) + "'");
  return std::move(**key);
}

Status KeyStore::add_usage(std::span<const UsageDelta> deltas) {
  if (deltas.empty()) return {};
  IF_RETURN_IF_ERROR(exec("BEGIN IMMEDIATE", "starting a usage update"));
  auto update = [&]() -> Status {
    Stmt st;
    int rc = sqlite3_prepare_v2(db_,
                                "UPDATE api_keys SET requests = requests + ?2, prompt_tokens = prompt_tokens + ?3, "
                                "completion_tokens = completion_tokens + ?4, spend_micros = spend_micros + ?5 "
                                "WHERE id = ?1",
                                -1, st.out(), nullptr);
    if (rc != SQLITE_OK) return sqlite_error(rc, "preparing a usage update");
    for (const UsageDelta& d : deltas) {
      sqlite3_reset(st.get());
      // Each increment is bounded far below 2^62 by the caller's limits; the
      // sum saturates rather than wrapping if a file was edited by hand.
      const uint64_t cap = uint64_t{1} << 62;
      const int binds[] = {
          bind_text(st.get(), 1, d.key_id),
          sqlite3_bind_int64(st.get(), 2, static_cast<int64_t>(std::min(d.add.requests, cap))),
          sqlite3_bind_int64(st.get(), 3, static_cast<int64_t>(std::min(d.add.prompt_tokens, cap))),
          sqlite3_bind_int64(st.get(), 4, static_cast<int64_t>(std::min(d.add.completion_tokens, cap))),
          sqlite3_bind_int64(st.get(), 5, static_cast<int64_t>(std::min(d.add.spend_micros, cap))),
      };
      for (int b : binds) {
        if (b != SQLITE_OK) return sqlite_error(b, "binding a usage update");
      }
      rc = sqlite3_step(st.get());
      if (rc != SQLITE_DONE) return sqlite_error(rc, "updating usage of '" + d.key_id + "'");
    }
    return exec("COMMIT", "committing a usage update");
  };
  if (Status s = update(); !s) {
    if (sqlite3_get_autocommit(db_) == 0) sqlite3_exec(db_, "ROLLBACK", nullptr, nullptr, nullptr);
    return s;
  }
  return {};
}

Result<int64_t> KeyStore::data_version() {
  Stmt st;
  int rc = sqlite3_prepare_v2(db_, "PRAGMA data_version", -1, st.out(), nullptr);
  if (rc == SQLITE_OK) rc = sqlite3_step(st.get());
  if (rc != SQLITE_ROW) return sqlite_error(rc, "reading data_version");
  return static_cast<int64_t>(sqlite3_column_int64(st.get(), 0));
}

Result<std::optional<StoredResponse>> KeyStore::get_response(std::string_view scope, std::string_view idem_key) {
  Stmt st;
  int rc = sqlite3_prepare_v2(db_,
                              "SELECT request_sha256, status, body, created_at FROM idempotency "
                              "WHERE scope = ?1 AND idem_key = ?2",
                              -1, st.out(), nullptr);
  if (rc == SQLITE_OK) rc = bind_text(st.get(), 1, scope);
  if (rc == SQLITE_OK) rc = bind_text(st.get(), 2, idem_key);
  if (rc != SQLITE_OK) return sqlite_error(rc, "preparing an idempotency lookup");
  rc = sqlite3_step(st.get());
  if (rc == SQLITE_DONE) return std::optional<StoredResponse>();
  if (rc != SQLITE_ROW) return sqlite_error(rc, "reading an idempotent response");
  StoredResponse r;
  if (sqlite3_column_type(st.get(), 0) != SQLITE_BLOB || sqlite3_column_bytes(st.get(), 0) != 32 ||
      sqlite3_column_type(st.get(), 1) != SQLITE_INTEGER || sqlite3_column_type(st.get(), 2) != SQLITE_TEXT ||
      sqlite3_column_type(st.get(), 3) != SQLITE_INTEGER) {
    return Unexpected(ErrorCode::kCorrupt, "key store '" + path_ + "': a stored idempotent response is damaged");
  }
  std::memcpy(r.request_sha256.data(), sqlite3_column_blob(st.get(), 0), 32);
  const int64_t status = sqlite3_column_int64(st.get(), 1);
  if (status < 200 || status > 599) {
    return Unexpected(ErrorCode::kCorrupt, "key store '" + path_ + "': a stored response has status " +
                                               std::to_string(status));
  }
  r.status = static_cast<int>(status);
  r.body.assign(reinterpret_cast<const char*>(sqlite3_column_text(st.get(), 2)),
                static_cast<size_t>(sqlite3_column_bytes(st.get(), 2)));
  r.created_at = sqlite3_column_int64(st.get(), 3);
  return std::optional<StoredResponse>(std::move(r));
}

Status KeyStore::put_response(std::string_view scope, std::string_view idem_key, const StoredResponse& response) {
  if (scope.empty() || scope.size() > kIdempotencyScopeBytesMax || idem_key.empty() ||
      idem_key.size() > kIdempotencyKeyBytesMax || response.body.size() > kIdempotencyResponseBytesMax) {
    return Unexpected(ErrorCode::kOutOfRange, "idempotent response: scope, key or body out of its bounds");
  }
  Stmt st;
  int rc = sqlite3_prepare_v2(db_,
                              "INSERT OR REPLACE INTO idempotency (scope, idem_key, request_sha256, status, body, "
                              "created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                              -1, st.out(), nullptr);
  if (rc != SQLITE_OK) return sqlite_error(rc, "preparing an idempotency insert");
  const int binds[] = {bind_text(st.get(), 1, scope),
                       bind_text(st.get(), 2, idem_key),
                       bind_hash(st.get(), 3, response.request_sha256),
                       sqlite3_bind_int(st.get(), 4, response.status),
                       bind_text(st.get(), 5, response.body),
                       sqlite3_bind_int64(st.get(), 6, response.created_at)};
  for (int b : binds) {
    if (b != SQLITE_OK) return sqlite_error(b, "binding an idempotent response");
  }
  rc = sqlite3_step(st.get());
  if (rc != SQLITE_DONE) return sqlite_error(rc, "storing an idempotent response");
  return {};
}

Result<uint64_t> KeyStore::prune_responses(core::TimeMs before) {
  Stmt old;
  int rc = sqlite3_prepare_v2(db_, "DELETE FROM idempotency WHERE created_at < ?1", -1, old.out(), nullptr);
  if (rc == SQLITE_OK) rc = sqlite3_bind_int64(old.get(), 1, before);
  if (rc == SQLITE_OK) rc = sqlite3_step(old.get());
  if (rc != SQLITE_DONE) return sqlite_error(rc, "pruning old responses");
  uint64_t deleted = static_cast<uint64_t>(sqlite3_changes(db_));
  Stmt excess;
  rc = sqlite3_prepare_v2(db_,
                          "DELETE FROM idempotency WHERE rowid IN (SELECT rowid FROM idempotency "
                          "ORDER BY created_at DESC LIMIT -1 OFFSET ?1)",
                          -1, excess.out(), nullptr);
  if (rc == SQLITE_OK) rc = sqlite3_bind_int64(excess.get(), 1, static_cast<int64_t>(kIdempotencyEntriesMax));
  if (rc == SQLITE_OK) rc = sqlite3_step(excess.get());
  if (rc != SQLITE_DONE) return sqlite_error(rc, "pruning excess responses");
  deleted += static_cast<uint64_t>(sqlite3_changes(db_));
  return deleted;
}

}  // namespace idlefleet::store
