// SqlDb: one database connection, SQLite or PostgreSQL, behind the few
// operations a store's logic needs: statements with $1, $2... placeholders
// whose rows are visited one at a time, and read and write transactions. A
// store whose logic is heavy (the ledger) is written once over it, in SQL
// both databases accept, instead of once per database.
//
// The dialects, as a store sees them:
// - Values are NULL, 64-bit integers, text or blobs. PostgreSQL's BIGINT,
//   INTEGER and BOOLEAN read as integers, TEXT as text, BYTEA as blobs; a
//   column of any other type reads as kOther (a store treats it as damage).
//   SUM over BIGINT is NUMERIC in PostgreSQL: write CAST(SUM(x) AS BIGINT).
// - begin_write() serialises writers of the same store: SQLite's BEGIN
//   IMMEDIATE, and in PostgreSQL a transaction-scoped advisory lock named
//   after the store, so that a read-then-write (is this transaction already
//   posted?) sees what every earlier writer committed, on any replica.
// - begin_read() is a consistent snapshot (PostgreSQL: REPEATABLE READ, READ
//   ONLY).
// - An integer that overflows (a SUM past int64) is kOutOfRange; a unique or
//   primary key violation kAlreadyExists; other errors as sqlite_db.h and
//   pg_db.h describe.
// - Text compares bytewise in both (SQLite's default; PostgreSQL columns are
//   declared COLLATE "C" by the stores' migrations).
//
// Thread-safety: none; one thread at a time.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "common/result.h"

namespace idlefleet::store {

struct SqlValue {
  enum class Type : uint8_t { kNull, kInt, kText, kBlob, kOther };
  Type type = Type::kNull;
  int64_t integer = 0;
  std::string bytes;  // kText and kBlob

  static SqlValue of(int64_t v) { return {Type::kInt, v, {}}; }
  static SqlValue text(std::string_view v) { return {Type::kText, 0, std::string(v)}; }
  static SqlValue blob(std::string_view v) { return {Type::kBlob, 0, std::string(v)}; }
};
using SqlRow = std::vector<SqlValue>;
// Called once per result row; an error stops the statement and is returned.
using SqlRowVisitor = std::function<Status(const SqlRow&)>;

class SqlDb {
 public:
  enum class Dialect { kSqlite, kPostgres };

  virtual ~SqlDb() = default;
  virtual Dialect dialect() const = 0;
  // "ledger 'path'" or "ledger 'postgresql://user@host/db'" (no password).
  virtual const std::string& label() const = 0;

  // Runs `sql` and visits its rows in order, one at a time.
  // REQUIRES: params.size() equals the highest $N in sql.
  virtual Status query(const std::string& sql, std::span<const SqlValue> params, const std::string& what,
                       const SqlRowVisitor& row) = 0;
  // Runs a statement that returns no rows; returns how many rows it changed.
  virtual Result<int64_t> exec(const std::string& sql, std::span<const SqlValue> params, const std::string& what) = 0;

  virtual Status begin_write(const std::string& what) = 0;
  virtual Status begin_read(const std::string& what) = 0;
  virtual Status commit(const std::string& what) = 0;
  // Ends any open transaction without its changes; never fails.
  virtual void rollback() = 0;

  // Every row of `sql`, up to rows_max (kOutOfRange beyond, naming `what`).
  Result<std::vector<SqlRow>> rows(const std::string& sql, std::span<const SqlValue> params, const std::string& what,
                                   size_t rows_max);
};

struct SqlDbOptions {
  std::string store;  // names the store in labels ("ledger") and in PostgreSQL's idlefleet_schema
  std::span<const char* const> sqlite_migrations;
  std::span<const char* const> postgres_migrations;
  // SQLite only: synchronous=FULL (money) rather than NORMAL; busy timeout.
  bool sqlite_synchronous_full = false;
  int sqlite_busy_timeout_ms = 5000;
};

// Opens `location` (a postgresql:// URL, or a SQLite path or ":memory:") and
// applies the store's missing migrations; errors as the dialects' own.
Result<std::unique_ptr<SqlDb>> open_sql_db(const std::string& location, const SqlDbOptions& options);

}  // namespace idlefleet::store
