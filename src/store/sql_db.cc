#include "store/sql_db.h"

#include <sqlite3.h>

#include <cstring>
#include <map>
#include <utility>

#include "store/pg_db.h"
#include "store/sqlite_db.h"

namespace idlefleet::store {

Result<std::vector<SqlRow>> SqlDb::rows(const std::string& sql, std::span<const SqlValue> params,
                                        const std::string& what, size_t rows_max) {
  std::vector<SqlRow> out;
  Status s = query(sql, params, what, [&](const SqlRow& row) -> Status {
    if (out.size() >= rows_max) {
      return Unexpected(ErrorCode::kOutOfRange,
                        label() + ": " + what + ": more than " + std::to_string(rows_max) + " rows");
    }
    out.push_back(row);
    return {};
  });
  if (!s) return Unexpected(s.error());
  return out;
}

namespace {

// $N -> ?N outside quoted text: SQLite reads "$1" as a parameter *named* "$1".
std::string sqlite_placeholders(const std::string& sql) {
  std::string out;
  out.reserve(sql.size());
  char quote = 0;
  for (size_t i = 0; i < sql.size(); ++i) {
    const char c = sql[i];
    if (quote != 0) {
      if (c == quote) quote = 0;
    } else if (c == '\'' || c == '"') {
      quote = c;
    } else if (c == '$' && i + 1 < sql.size() && sql[i + 1] >= '0' && sql[i + 1] <= '9') {
      out.push_back('?');
      continue;
    }
    out.push_back(c);
  }
  return out;
}

class SqliteSqlDb final : public SqlDb {
 public:
  SqliteSqlDb(sqlite3* db, std::string label) : db_(db), label_(std::move(label)) {}
  ~SqliteSqlDb() override {
    for (auto& [sql, st] : statements_) sqlite3_finalize(st);
    sqlite3_close_v2(db_);
  }

  Dialect dialect() const override { return Dialect::kSqlite; }
  const std::string& label() const override { return label_; }

  Status query(const std::string& sql, std::span<const SqlValue> params, const std::string& what,
               const SqlRowVisitor& row) override {
    auto st = statement(sql, params, what);
    if (!st) return Unexpected(st.error());
    Reset reset{*st};
    SqlRow values;
    for (;;) {
      const int rc = sqlite3_step(*st);
      if (rc == SQLITE_DONE) return {};
      if (rc != SQLITE_ROW) return step_error(rc, what);
      const int n = sqlite3_column_count(*st);
      values.resize(static_cast<size_t>(n));
      for (int i = 0; i < n; ++i) read_column(*st, i, values[static_cast<size_t>(i)]);
      IF_RETURN_IF_ERROR(row(values));
    }
  }

  Result<int64_t> exec(const std::string& sql, std::span<const SqlValue> params, const std::string& what) override {
    auto st = statement(sql, params, what);
    if (!st) return Unexpected(st.error());
    Reset reset{*st};
    const int rc = sqlite3_step(*st);
    if (rc != SQLITE_DONE && rc != SQLITE_ROW) return step_error(rc, what);
    return static_cast<int64_t>(sqlite3_changes64(db_));
  }

  Status begin_write(const std::string& what) override { return sqlite_exec(db_, "BEGIN IMMEDIATE", label_, what.c_str()); }
  Status begin_read(const std::string& what) override { return sqlite_exec(db_, "BEGIN", label_, what.c_str()); }
  Status commit(const std::string& what) override { return sqlite_exec(db_, "COMMIT", label_, what.c_str()); }
  void rollback() override {
    if (sqlite3_get_autocommit(db_) == 0) sqlite3_exec(db_, "ROLLBACK", nullptr, nullptr, nullptr);
  }

 private:
  // Resets a cached statement when the scope ends, so that it holds no read
  // transaction open and keeps no bindings.
  struct Reset {
    sqlite3_stmt* st;
    ~Reset() {
      sqlite3_reset(st);
      sqlite3_clear_bindings(st);
    }
  };

  Result<sqlite3_stmt*> statement(const std::string& sql, std::span<const SqlValue> params, const std::string& what) {
    auto it = statements_.find(sql);
    if (it == statements_.end()) {
      sqlite3_stmt* st = nullptr;
      const std::string text = sqlite_placeholders(sql);
      const int rc = sqlite3_prepare_v3(db_, text.c_str(), -1, SQLITE_PREPARE_PERSISTENT, &st, nullptr);
      if (rc != SQLITE_OK) return sqlite_error(db_, rc, label_, what);
      it = statements_.emplace(sql, st).first;
    }
    sqlite3_stmt* st = it->second;
    for (size_t i = 0; i < params.size(); ++i) {
      const SqlValue& v = params[i];
      const int col = static_cast<int>(i) + 1;
      int rc = SQLITE_OK;
      switch (v.type) {
        case SqlValue::Type::kInt:
          rc = sqlite3_bind_int64(st, col, v.integer);
          break;
        case SqlValue::Type::kText:
          rc = sqlite3_bind_text64(st, col, v.bytes.data(), v.bytes.size(), SQLITE_TRANSIENT, SQLITE_UTF8);
          break;
        case SqlValue::Type::kBlob:
          rc = sqlite3_bind_blob64(st, col, v.bytes.empty() ? "" : v.bytes.data(), v.bytes.size(), SQLITE_TRANSIENT);
          break;
        case SqlValue::Type::kNull:
        case SqlValue::Type::kOther:
          rc = sqlite3_bind_null(st, col);
          break;
      }
      if (rc != SQLITE_OK) {
        sqlite3_clear_bindings(st);
        return sqlite_error(db_, rc, label_, what + ": binding $" + std::to_string(col));
      }
    }
    return st;
  }

  static void read_column(sqlite3_stmt* st, int i, SqlValue& v) {
    switch (sqlite3_column_type(st, i)) {
      case SQLITE_INTEGER:
        v.type = SqlValue::Type::kInt;
        v.integer = sqlite3_column_int64(st, i);
        v.bytes.clear();
        return;
      case SQLITE_TEXT:
      case SQLITE_BLOB: {
        const bool text = sqlite3_column_type(st, i) == SQLITE_TEXT;
        const auto* p = static_cast<const char*>(text ? static_cast<const void*>(sqlite3_column_text(st, i))
                                                      : sqlite3_column_blob(st, i));
        v.type = text ? SqlValue::Type::kText : SqlValue::Type::kBlob;
        v.bytes.assign(p == nullptr ? "" : p, static_cast<size_t>(sqlite3_column_bytes(st, i)));
        return;
      }
      case SQLITE_NULL:
        v = SqlValue{};
        return;
      default:  // a REAL
        v = SqlValue{SqlValue::Type::kOther, 0, {}};
    }
  }

  Unexpected step_error(int rc, const std::string& what) const {
    const int primary = rc & 0xff;
    if (primary == SQLITE_CONSTRAINT) {
      return Unexpected(ErrorCode::kAlreadyExists, label_ + ": " + what + ": " + sqlite3_errmsg(db_));
    }
    // SQLite stops an integer SUM that overflows with a plain error.
    if (primary == SQLITE_ERROR && std::strstr(sqlite3_errmsg(db_), "integer overflow") != nullptr) {
      return Unexpected(ErrorCode::kOutOfRange, label_ + ": " + what + ": " + sqlite3_errmsg(db_));
    }
    return sqlite_error(db_, rc, label_, what);
  }

  sqlite3* db_;
  std::string label_;
  std::map<std::string, sqlite3_stmt*> statements_;
};

// A 64-bit advisory lock key from the store's name (FNV-1a).
int64_t lock_key(std::string_view store) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (char c : store) {
    h ^= static_cast<unsigned char>(c);
    h *= 0x100000001b3ull;
  }
  return static_cast<int64_t>(h);
}

class PgSqlDb final : public SqlDb {
 public:
  PgSqlDb(std::unique_ptr<PgConnection> conn, int64_t lock) : conn_(std::move(conn)), lock_(lock) {}

  Dialect dialect() const override { return Dialect::kPostgres; }
  const std::string& label() const override { return conn_->label(); }

  Status query(const std::string& sql, std::span<const SqlValue> params, const std::string& what,
               const SqlRowVisitor& row) override {
    SqlRow values;
    return conn_->exec_each(sql, to_params(params), what, [&](const PgResult& r) -> Status {
      values.resize(static_cast<size_t>(r.columns()));
      for (int i = 0; i < r.columns(); ++i) read_column(r, i, values[static_cast<size_t>(i)]);
      return row(values);
    });
  }

  Result<int64_t> exec(const std::string& sql, std::span<const SqlValue> params, const std::string& what) override {
    auto r = conn_->exec(sql, to_params(params), what);
    if (!r) return Unexpected(r.error());
    return r->affected();
  }

  Status begin_write(const std::string& what) override {
    IF_RETURN_IF_ERROR(conn_->begin(what));
    auto locked = conn_->exec("SELECT pg_advisory_xact_lock($1)", PgParams().int8(lock_), what);
    if (!locked) {
      conn_->rollback();
      return Unexpected(locked.error());
    }
    return {};
  }
  Status begin_read(const std::string& what) override {
    return conn_->exec_script("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY", what);
  }
  Status commit(const std::string& what) override { return conn_->commit(what); }
  void rollback() override { conn_->rollback(); }

 private:
  static PgParams to_params(std::span<const SqlValue> params) {
    PgParams p;
    for (const SqlValue& v : params) {
      switch (v.type) {
        case SqlValue::Type::kInt:
          p.int8(v.integer);
          break;
        case SqlValue::Type::kBlob:
          p.bytes(v.bytes);
          break;
        default:  // kText; a NULL parameter is not used by any store
          p.text(v.bytes);
      }
    }
    return p;
  }

  static void read_column(const PgResult& r, int i, SqlValue& v) {
    if (r.is_null(0, i)) {
      v = SqlValue{};
      return;
    }
    switch (r.type(i)) {
      case PgType::kInt8:
      case PgType::kInt4:
      case PgType::kBool:
        v.type = SqlValue::Type::kInt;
        v.integer = r.integer(0, i);
        v.bytes.clear();
        return;
      case PgType::kText:
      case PgType::kBytea:
        v.type = r.type(i) == PgType::kText ? SqlValue::Type::kText : SqlValue::Type::kBlob;
        v.bytes.assign(r.bytes(0, i));
        return;
      default:
        v = SqlValue{SqlValue::Type::kOther, 0, {}};
    }
  }

  std::unique_ptr<PgConnection> conn_;
  int64_t lock_;
};

}  // namespace

Result<std::unique_ptr<SqlDb>> open_sql_db(const std::string& location, const SqlDbOptions& options) {
  if (is_postgres_url(location)) {
    auto conn = PgConnection::connect(location, options.store);
    if (!conn) return Unexpected(conn.error());
    IF_RETURN_IF_ERROR((*conn)->migrate(options.store, options.postgres_migrations));
    return std::unique_ptr<SqlDb>(new PgSqlDb(std::move(*conn), lock_key(options.store)));
  }
  const std::string label = options.store + " '" + location + "'";
  sqlite3* db = nullptr;
  IF_RETURN_IF_ERROR(open_database(location, options.sqlite_migrations, label, &db));
  auto out = std::make_unique<SqliteSqlDb>(db, label);
  sqlite3_busy_timeout(db, options.sqlite_busy_timeout_ms);
  if (options.sqlite_synchronous_full) {
    IF_RETURN_IF_ERROR(sqlite_exec(db, "PRAGMA synchronous = FULL", label, "setting pragmas"));
  }
  return std::unique_ptr<SqlDb>(std::move(out));
}

}  // namespace idlefleet::store
