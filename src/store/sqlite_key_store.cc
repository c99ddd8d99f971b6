#include "store/sqlite_key_store.h"

#include <sqlite3.h>

#include <array>
#include <utility>
#include <vector>

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

using key_rows::kKeyColumns;

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

// Reads one api_keys row (kKeyColumns order).
Status read_key(sqlite3_stmt* st, ApiKey& k) {
  auto text = [&](int col) {
    const auto* p = static_cast<const char*>(sqlite3_column_blob(st, col));
    return std::string(p != nullptr ? p : "", static_cast<size_t>(sqlite3_column_bytes(st, col)));
  };
  k.id = text(0);
  auto corrupt = [&](const char* column, const std::string& why) {
    return Unexpected(ErrorCode::kCorrupt, "key '" + k.id.substr(0, 64) + "': column " + column + " " + why);
  };
  if (sqlite3_column_type(st, 0) != SQLITE_TEXT) return corrupt("id", "is not a key id");
  if (sqlite3_column_type(st, 1) != SQLITE_TEXT) return corrupt("name", "is not text");
  k.name = text(1);
  if (sqlite3_column_type(st, 2) != SQLITE_BLOB) return corrupt("secret_sha256", "is not a 32-byte blob");
  std::array<int64_t, 9> v{};
  for (int i = 0; i < 9; ++i) {
    if (sqlite3_column_type(st, 3 + i) != SQLITE_INTEGER) {
      return corrupt(key_rows::kNumberColumns[i], "is not an integer");
    }
    v[static_cast<size_t>(i)] = sqlite3_column_int64(st, 3 + i);
  }
  if (sqlite3_column_type(st, 12) != SQLITE_TEXT) return corrupt("scopes", "is not text");
  k.scopes = text(12);
  return key_rows::check_key_row(k, text(2), v);
}

}  // namespace

SqliteKeyStore::SqliteKeyStore(std::string path, sqlite3* db) : path_(std::move(path)), db_(db) {}

SqliteKeyStore::~SqliteKeyStore() { sqlite3_close_v2(db_); }

Unexpected SqliteKeyStore::sqlite_error(int rc, const std::string& what) const {
  return store::sqlite_error(db_, rc, label(), what);
}

Status SqliteKeyStore::exec(const char* sql, const char* what) {
  return sqlite_exec(db_, sql, label(), what);
}

Result<std::unique_ptr<SqliteKeyStore>> SqliteKeyStore::open(const std::string& path) {
  sqlite3* db = nullptr;
  IF_RETURN_IF_ERROR(open_database(path, kMigrations, "key store '" + path + "'", &db));
  std::unique_ptr<SqliteKeyStore> store(new SqliteKeyStore(path, db));
  sqlite3_busy_timeout(db, kKeyStoreBusyTimeoutMs);
  // Keys and usage are money: a committed write survives a power loss too.
  IF_RETURN_IF_ERROR(store->exec("PRAGMA synchronous = FULL", "setting pragmas"));
  return store;
}

Result<CreatedKey> SqliteKeyStore::create(const NewKey& request, core::TimeMs now) {
  auto made = key_rows::new_key(request, now);
  if (!made) return Unexpected(made.error());
  CreatedKey& out = *made;

  IF_RETURN_IF_ERROR(exec("BEGIN IMMEDIATE", "starting a create"));
  auto insert = [&]() -> Status {
    Stmt count;
    int rc = sqlite3_prepare_v2(db_, "SELECT COUNT(*) FROM api_keys", -1, count.out(), nullptr);
    if (rc == SQLITE_OK) rc = sqlite3_step(count.get());
    if (rc != SQLITE_ROW) return sqlite_error(rc, "counting keys");
    const auto keys = static_cast<uint64_t>(sqlite3_column_int64(count.get(), 0));
    count.reset();
    IF_RETURN_IF_ERROR(key_rows::check_key_count(keys, label()));
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
        sqlite3_bind_int64(st.get(), 5, static_cast<int64_t>(out.key.limits.requests_per_minute)),
        sqlite3_bind_int64(st.get(), 6, static_cast<int64_t>(out.key.limits.tokens_per_minute)),
        sqlite3_bind_int64(st.get(), 7, static_cast<int64_t>(out.key.spend_limit_micros)),
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
  return made;
}

Result<std::vector<ApiKey>> SqliteKeyStore::read_keys(sqlite3_stmt* st) {
  std::vector<ApiKey> out;
  for (;;) {
    const int rc = sqlite3_step(st);
    if (rc == SQLITE_DONE) break;
    if (rc != SQLITE_ROW) return sqlite_error(rc, "reading keys");
    if (out.size() >= kKeysMax) {
      return Unexpected(ErrorCode::kCorrupt, label() + ": more than " + std::to_string(kKeysMax) + " keys");
    }
    ApiKey k;
    if (Status s = read_key(st, k); !s) {
      return Unexpected(ErrorCode::kCorrupt, label() + ": " + s.error().message);
    }
    out.push_back(std::move(k));
  }
  return out;
}

Result<std::vector<ApiKey>> SqliteKeyStore::list() {
  Stmt st;
  const std::string sql = std::string("SELECT ") + kKeyColumns + " FROM api_keys ORDER BY created_at, id";
  const int rc = sqlite3_prepare_v2(db_, sql.c_str(), -1, st.out(), nullptr);
  if (rc != SQLITE_OK) return sqlite_error(rc, "preparing a list");
  return read_keys(st.get());
}

Result<std::optional<ApiKey>> SqliteKeyStore::get(std::string_view id) {
  if (!key_id_well_formed(id)) return std::optional<ApiKey>();  // no row has such an id
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

Result<ApiKey> SqliteKeyStore::revoke(std::string_view id, core::TimeMs now) {
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

Status SqliteKeyStore::add_usage(std::span<const UsageDelta> deltas) {
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
      const int binds[] = {
          bind_text(st.get(), 1, d.key_id),
          sqlite3_bind_int64(st.get(), 2, key_rows::usage_increment(d.add.requests)),
          sqlite3_bind_int64(st.get(), 3, key_rows::usage_increment(d.add.prompt_tokens)),
          sqlite3_bind_int64(st.get(), 4, key_rows::usage_increment(d.add.completion_tokens)),
          sqlite3_bind_int64(st.get(), 5, key_rows::usage_increment(d.add.spend_micros)),
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

Result<int64_t> SqliteKeyStore::data_version() {
  Stmt st;
  int rc = sqlite3_prepare_v2(db_, "PRAGMA data_version", -1, st.out(), nullptr);
  if (rc == SQLITE_OK) rc = sqlite3_step(st.get());
  if (rc != SQLITE_ROW) return sqlite_error(rc, "reading data_version");
  return static_cast<int64_t>(sqlite3_column_int64(st.get(), 0));
}

Result<std::optional<StoredResponse>> SqliteKeyStore::get_response(std::string_view scope, std::string_view idem_key) {
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
  if (sqlite3_column_type(st.get(), 0) != SQLITE_BLOB || sqlite3_column_type(st.get(), 1) != SQLITE_INTEGER ||
      sqlite3_column_type(st.get(), 2) != SQLITE_TEXT || sqlite3_column_type(st.get(), 3) != SQLITE_INTEGER) {
    return Unexpected(ErrorCode::kCorrupt, label() + ": a stored idempotent response is damaged");
  }
  auto column = [&](int col) {
    const auto* p = static_cast<const char*>(sqlite3_column_blob(st.get(), col));
    return std::string(p != nullptr ? p : "", static_cast<size_t>(sqlite3_column_bytes(st.get(), col)));
  };
  auto r = key_rows::response_row(column(0), sqlite3_column_int64(st.get(), 1), column(2),
                                  sqlite3_column_int64(st.get(), 3), label());
  if (!r) return Unexpected(r.error());
  return std::optional<StoredResponse>(std::move(*r));
}

Status SqliteKeyStore::put_response(std::string_view scope, std::string_view idem_key, const StoredResponse& response) {
  IF_RETURN_IF_ERROR(key_rows::check_response(scope, idem_key, response));
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

Result<uint64_t> SqliteKeyStore::prune_responses(core::TimeMs before) {
  Stmt old;
  int rc = sqlite3_prepare_v2(db_, "DELETE FROM idempotency WHERE created_at < ?1", -1, old.out(), nullptr);
  if (rc == SQLITE_OK) rc = sqlite3_bind_int64(old.get(), 1, before);
  if (rc == SQLITE_OK) rc = sqlite3_step(old.get());
  if (rc != SQLITE_DONE) return sqlite_error(rc, "pruning old responses");
  uint64_t deleted = static_cast<uint64_t>(sqlite3_changes(db_));
  Stmt excess;
  rc = sqlite3_prepare_v2(db_,
                          "DELETE FROM idempotency WHERE rowid IN (SELECT rowid FROM idempotency "
                          "ORDER BY created_at DESC, scope DESC, idem_key DESC LIMIT -1 OFFSET ?1)",
                          -1, excess.out(), nullptr);
  if (rc == SQLITE_OK) rc = sqlite3_bind_int64(excess.get(), 1, static_cast<int64_t>(kIdempotencyEntriesMax));
  if (rc == SQLITE_OK) rc = sqlite3_step(excess.get());
  if (rc != SQLITE_DONE) return sqlite_error(rc, "pruning excess responses");
  deleted += static_cast<uint64_t>(sqlite3_changes(db_));
  return deleted;
}

}  // namespace idlefleet::store
