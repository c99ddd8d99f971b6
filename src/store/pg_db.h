// The PostgreSQL plumbing the stores share (libpq): a connection that
// reconnects after the server went away, statements prepared once per
// connection, parameters and results in binary (no quoting, no text parsing
// of numbers), SQLSTATEs turned into Errors, and numbered migrations.
//
// Which database: a store is opened on a location; one that starts with
// postgresql:// or postgres:// is a libpq connection URI
// (https://www.postgresql.org/docs/15/libpq-connect.html#LIBPQ-CONNSTRING),
// anything else is a SQLite file. Several stores share one database: each
// keeps its own tables and its own row in the migrations table.
//
// Migrations: `idlefleet_schema (store, version, applied_at)` records each
// migration applied, per store. migrate() takes a transaction-scoped advisory
// lock first, so that replicas starting together do not both migrate, and
// refuses a database written by a newer build (kUnsupported). Shipped
// migrations never change: a new schema is a new entry.
//
// Errors: a connection that cannot be made or is lost is kIo (the next call
// reconnects); a unique violation kAlreadyExists; a number out of range
// (22003: a SUM cast to BIGINT past int64) kOutOfRange; another value the
// server refuses (bad UTF-8) kInvalidArgument; data the server reports
// corrupted kCorrupt; SQL of ours the server rejects kInternal. Messages
// carry the store's label (the URL without its password), what was being
// done, and the server's own message.
//
// Thread-safety: none. A PgConnection is used by one thread at a time, as a
// SQLite handle is.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "common/result.h"
#include "store/location.h"

struct pg_conn;
struct pg_result;

namespace idlefleet::store {

// Statements sent before their results are read (exec_pipelined): the
// results of a group must fit in the socket's buffers while the group is
// still being sent, or client and server would each wait for the other.
inline constexpr size_t kPgPipelineGroupMax = 512;
// How long connecting may take before kIo.
inline constexpr int kPgConnectTimeoutS = 10;
// A statement that runs longer is cancelled by the server (kIo).
inline constexpr int kPgStatementTimeoutMs = 60'000;
// Server type OIDs of the columns the stores use (pg_type.oid; stable).
enum class PgType : uint32_t { kBool = 16, kBytea = 17, kInt8 = 20, kInt4 = 23, kText = 25 };

// Parameters of one statement, all sent in binary.
class PgParams {
 public:
  PgParams& text(std::string_view v) { return add(PgType::kText, v); }
  PgParams& bytes(std::string_view v) { return add(PgType::kBytea, v); }
  PgParams& int8(int64_t v);
  PgParams& boolean(bool v);
  size_t size() const { return types_.size(); }

 private:
  friend class PgConnection;
  PgParams& add(PgType type, std::string_view v);
  std::vector<uint32_t> types_;
  std::vector<std::string> values_;
};

// One statement's result rows (binary). Owns the libpq result.
class PgResult {
 public:
  explicit PgResult(pg_result* res) : res_(res) {}
  PgResult(PgResult&& other) noexcept : res_(other.res_) { other.res_ = nullptr; }
  PgResult& operator=(PgResult&& other) noexcept;
  PgResult(const PgResult&) = delete;
  PgResult& operator=(const PgResult&) = delete;
  ~PgResult();

  int rows() const;
  int columns() const;
  // Rows affected by an INSERT, UPDATE or DELETE.
  int64_t affected() const;
  bool is_null(int row, int col) const;
  // Checks that the columns have these types, in order (kCorrupt naming the
  // column otherwise: a table changed by hand must not be misread).
  Status check_types(std::span<const PgType> types, const std::string& label) const;
  // A column's declared type.
  PgType type(int col) const;
  // A column's raw bytes (text or bytea); empty for NULL.
  std::string_view bytes(int row, int col) const;
  std::string text(int row, int col) const { return std::string(bytes(row, col)); }
  // An int8, int4 or bool column (by its declared type), 0 for NULL.
  int64_t integer(int row, int col) const;

 private:
  friend class PgConnection;
  pg_result* res_ = nullptr;
};

class PgConnection {
 public:
  // Connects to `url`. `store` names the store in messages ("job store").
  // synchronous_commit false: a commit returns before its WAL reaches the
  // disk (PostgreSQL's synchronous_commit = off, for this connection): a
  // server crash may lose the last few hundred milliseconds of commits, never
  // corrupt anything. For data that can be made again (the job store), as
  // SQLite's synchronous=NORMAL; never for money. The setting survives
  // reconnects (it is a connection option).
  // kInvalidArgument for a malformed URL, kIo when the server cannot be reached.
  static Result<std::unique_ptr<PgConnection>> connect(const std::string& url, const std::string& store,
                                                       bool synchronous_commit = true);

  ~PgConnection();
  PgConnection(const PgConnection&) = delete;
  PgConnection& operator=(const PgConnection&) = delete;

  // Runs one statement with binary parameters and results. The statement is
  // prepared on first use per connection (keyed by its text), and again when
  // a table it reads was altered since (outside a transaction). A lost
  // connection is re-established once before the statement is sent; if the
  // statement itself fails because the server went away, the error is kIo
  // and the next call reconnects.
  Result<PgResult> exec(const std::string& sql, const PgParams& params, const std::string& what);
  Result<PgResult> exec(const std::string& sql, const std::string& what) { return exec(sql, PgParams(), what); }
  // Runs one statement and calls `row` with each result row as it arrives
  // (libpq's single-row mode: each PgResult holds row 0 only), so that a long
  // read is never held in memory whole. An error from `row` stops the visits
  // and is returned.
  Status exec_each(const std::string& sql, const PgParams& params, const std::string& what,
                   const std::function<Status(const PgResult&)>& row);
  // exec() for a query whose result must have columns of `types`, in order,
  // and no NULL (kCorrupt naming the column otherwise: the stores' columns are
  // all NOT NULL, and a table changed by hand must not be misread).
  Result<PgResult> query(const std::string& sql, const PgParams& params, std::span<const PgType> types,
                         const std::string& what);
  // Runs one statement once per entry of `rows` (all the same parameter
  // types), sent in libpq's pipeline mode: groups of kPgPipelineGroupMax
  // statements travel before their results are read, instead of a round trip
  // each. The first failure ends it (the statements after it are not run) and
  // is returned; use inside a transaction, so that a failure leaves nothing.
  Status exec_pipelined(const std::string& sql, std::span<const PgParams> rows, const std::string& what);
  // Runs SQL text (one or more statements, no parameters, no results).
  Status exec_script(const char* sql, const std::string& what);

  // A transaction: begin(), then commit() or rollback(). rollback() never
  // fails (an aborted or lost transaction is gone either way).
  Status begin(const std::string& what) { return exec_script("BEGIN", what); }
  Status commit(const std::string& what) { return exec_script("COMMIT", what); }
  void rollback();

  // Applies the missing migrations of `store_name` (migration N is
  // migrations[N - 1]) in one transaction under an advisory lock.
  Status migrate(std::string_view store_name, std::span<const char* const> migrations);

  // "job store 'postgresql://user@host/db'" (no password).
  const std::string& label() const { return label_; }
  Unexpected error(const std::string& what, const std::string& detail, ErrorCode code) const;

 private:
  PgConnection(pg_conn* conn, std::string url, std::string label);
  static pg_conn* open_conn(const std::string& url, bool synchronous_commit);
  Status ensure_connected();
  // The prepared statement's name for `sql`, preparing it on first use.
  Result<std::string> prepared(const std::string& sql, const PgParams& params, const std::string& what);
  Unexpected result_error(pg_result* res, const std::string& what) const;

  pg_conn* conn_ = nullptr;
  std::string url_;
  std::string label_;
  // Statement text -> prepared name, for this connection (cleared on reconnect).
  std::unordered_map<std::string, std::string> prepared_;
  // Names given so far ("s0", "s1", ...): a name is never reused on a connection.
  uint64_t statements_named_ = 0;
};

}  // namespace idlefleet::store
