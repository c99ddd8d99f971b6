// The SQLite plumbing every store shares: opening a file in WAL mode with
// numbered migrations, turning result codes into Errors, and a prepared
// statement that finalizes itself.
//
// Migrations: migration N (1-based) is migrations[N - 1]; a `schema_version`
// table records each one applied. open_database() applies the missing ones in
// one IMMEDIATE transaction (two processes opening an old file at once do not
// both migrate it) and refuses a file written by a newer build (kUnsupported).
// Shipped migrations never change: a new schema is a new entry.
//
// Durability: WAL journal, synchronous=NORMAL, foreign keys on. Connections
// are opened without SQLite's own mutex: one thread at a time per handle.
#pragma once

#include <sqlite3.h>

#include <cstdint>
#include <span>
#include <string>
#include <string_view>

#include "common/result.h"

namespace idlefleet::store {

// How long a statement waits for another process's write lock.
inline constexpr int kBusyTimeoutMs = 5000;

// An Error for result code `rc` while doing `what` on the store `label` (e.g.
// "job store 'x.db'"): kCorrupt for a damaged file or not a database,
// kInternal for misuse, kIo otherwise; with SQLite's own message.
Unexpected sqlite_error(sqlite3* db, int rc, const std::string& label, const std::string& what);

// Runs `sql` (one or more statements, no results).
Status sqlite_exec(sqlite3* db, const char* sql, const std::string& label, const char* what);

// Opens (creating if absent) `path` and migrates it. ":memory:" gives a
// private in-memory database (no WAL) for tests. On success *db owns the
// connection (close with sqlite3_close_v2); on failure *db is null.
Status open_database(const std::string& path, std::span<const char* const> migrations, const std::string& label,
                     sqlite3** db);

// A prepared statement that finalizes itself. prepared() is sqlite3_prepare_v2's
// result code; binds copy their values.
class Statement {
 public:
  Statement(sqlite3* db, const char* sql) { rc_ = sqlite3_prepare_v2(db, sql, -1, &s_, nullptr); }
  ~Statement() { sqlite3_finalize(s_); }
  Statement(const Statement&) = delete;
  Statement& operator=(const Statement&) = delete;
  int prepared() const { return rc_; }
  sqlite3_stmt* get() const { return s_; }
  void text(int i, std::string_view v) { sqlite3_bind_text(s_, i, v.data(), static_cast<int>(v.size()), SQLITE_TRANSIENT); }
  void blob(int i, std::string_view v) {
    sqlite3_bind_blob64(s_, i, v.empty() ? "" : v.data(), v.size(), SQLITE_TRANSIENT);
  }
  void integer(int i, int64_t v) { sqlite3_bind_int64(s_, i, v); }
  int step() { return sqlite3_step(s_); }
  std::string column_text(int i) const {
    const auto* p = reinterpret_cast<const char*>(sqlite3_column_blob(s_, i));
    const int n = sqlite3_column_bytes(s_, i);
    return p == nullptr ? std::string() : std::string(p, static_cast<size_t>(n));
  }
  int64_t column_int(int i) const { return sqlite3_column_int64(s_, i); }

 private:
  sqlite3_stmt* s_ = nullptr;
  int rc_ = SQLITE_OK;
};

}  // namespace idlefleet::store
