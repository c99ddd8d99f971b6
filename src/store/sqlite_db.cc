#include "store/sqlite_db.h"

#include <cstdint>

namespace idlefleet::store {

Unexpected sqlite_error(sqlite3* db, int rc, const std::string& label, const std::string& what) {
  const int primary = rc & 0xff;
  ErrorCode code = ErrorCode::kIo;
  if (primary == SQLITE_CORRUPT || primary == SQLITE_NOTADB) code = ErrorCode::kCorrupt;
  if (primary == SQLITE_MISUSE || primary == SQLITE_RANGE) code = ErrorCode::kInternal;
  // errmsg has the detail ("file is not a database"); without a handle only the code's text is left.
  const char* detail = db != nullptr ? sqlite3_errmsg(db) : sqlite3_errstr(rc);
  return Unexpected(code, label + ": " + what + ": " + detail);
}

Status sqlite_exec(sqlite3* db, const char* sql, const std::string& label, const char* what) {
  const int rc = sqlite3_exec(db, sql, nullptr, nullptr, nullptr);
  if (rc != SQLITE_OK) return sqlite_error(db, rc, label, what);
  return {};
}

Status open_database(const std::string& path, std::span<const char* const> migrations, const std::string& label,
                     sqlite3** out) {
  *out = nullptr;
  sqlite3* db = nullptr;
  const int rc = sqlite3_open_v2(path.c_str(), &db,
                                 SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, nullptr);
  auto fail = [&](Status s) {
    sqlite3_close_v2(db);
    return s;
  };
  if (rc != SQLITE_OK) return fail(sqlite_error(db, rc, label, "cannot open"));
  sqlite3_extended_result_codes(db, 1);
  sqlite3_busy_timeout(db, kBusyTimeoutMs);

  // The first statement that reads the file: a file that is not SQLite fails here.
  sqlite3_stmt* stmt = nullptr;
  int step = sqlite3_prepare_v2(db, "PRAGMA journal_mode = WAL", -1, &stmt, nullptr);
  std::string mode;
  if (step == SQLITE_OK) {
    step = sqlite3_step(stmt);
    if (step == SQLITE_ROW) {
      const auto* text = sqlite3_column_text(stmt, 0);
      mode = text != nullptr ? reinterpret_cast<const char*>(text) : "";
    }
  }
  sqlite3_finalize(stmt);
  if (step != SQLITE_ROW) return fail(sqlite_error(db, step, label, "not a usable SQLite database"));
  if (mode != "wal" && !(path == ":memory:" && mode == "memory")) {
    return fail(Unexpected(ErrorCode::kUnsupported, label + ": journal mode is '" + mode + "', not WAL"));
  }
  if (Status s = sqlite_exec(db, "PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON;", label, "setting pragmas");
      !s) {
    return fail(s);
  }

  const int64_t latest = static_cast<int64_t>(migrations.size());
  if (Status s = sqlite_exec(db, "BEGIN IMMEDIATE", label, "starting the migration"); !s) return fail(s);
  auto migrate = [&]() -> Status {
    IF_RETURN_IF_ERROR(sqlite_exec(db, "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER PRIMARY KEY NOT NULL)",
                                   label, "creating schema_version"));
    sqlite3_stmt* q = nullptr;
    int qrc = sqlite3_prepare_v2(db, "SELECT COALESCE(MAX(version), 0) FROM schema_version", -1, &q, nullptr);
    int64_t version = 0;
    if (qrc == SQLITE_OK) {
      qrc = sqlite3_step(q);
      if (qrc == SQLITE_ROW) version = sqlite3_column_int64(q, 0);
    }
    sqlite3_finalize(q);
    if (qrc != SQLITE_ROW) return sqlite_error(db, qrc, label, "reading schema_version");
    if (version > latest) {
      return Unexpected(ErrorCode::kUnsupported, label + ": schema version " + std::to_string(version) +
                                                     " is newer than this build's " + std::to_string(latest));
    }
    if (version < 0) {
      return Unexpected(ErrorCode::kCorrupt, label + ": schema version " + std::to_string(version) + " is negative");
    }
    for (int64_t v = version + 1; v <= latest; ++v) {
      const std::string what = "applying migration " + std::to_string(v);
      IF_RETURN_IF_ERROR(sqlite_exec(db, migrations[static_cast<size_t>(v - 1)], label, what.c_str()));
      const std::string record = "INSERT INTO schema_version (version) VALUES (" + std::to_string(v) + ")";
      IF_RETURN_IF_ERROR(sqlite_exec(db, record.c_str(), label, what.c_str()));
    }
    return sqlite_exec(db, "COMMIT", label, "committing the migration");
  };
  if (Status s = migrate(); !s) {
    if (sqlite3_get_autocommit(db) == 0) sqlite3_exec(db, "ROLLBACK", nullptr, nullptr, nullptr);
    return fail(s);
  }
  *out = db;
  return {};
}

}  // namespace idlefleet::store
