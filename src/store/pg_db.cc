#include "store/pg_db.h"

#include <libpq-fe.h>

#include <algorithm>
#include <array>
#include <cstring>
#include <functional>
#include <utility>

#include "common/check.h"

namespace idlefleet::store {
namespace {

// The advisory lock every migration takes (an arbitrary constant, "idlf").
constexpr int64_t kMigrationLockKey = 0x69646c66;

uint64_t load_be(std::string_view b) {
  uint64_t v = 0;
  for (char c : b) v = (v << 8) | static_cast<unsigned char>(c);
  return v;
}

std::string store_be(uint64_t v, size_t n) {
  std::string out(n, '\0');
  for (size_t i = 0; i < n; ++i) out[n - 1 - i] = static_cast<char>((v >> (8 * i)) & 0xff);
  return out;
}

// libpq's messages end with a newline.
std::string trimmed(const char* text) {
  std::string s = text != nullptr ? text : "";
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
  return s;
}

ErrorCode code_for_sqlstate(std::string_view state) {
  if (state.size() != 5) return ErrorCode::kIo;
  const std::string_view cls = state.substr(0, 2);
  if (state == "23505") return ErrorCode::kAlreadyExists;
  if (state == "22003") return ErrorCode::kOutOfRange;  // numeric value out of range: a SUM past int64
  if (cls == "22") return ErrorCode::kInvalidArgument;  // data exception: bad UTF-8, out of range
  if (state == "XX001" || state == "XX002") return ErrorCode::kCorrupt;
  if (cls == "42" || cls == "0A" || cls == "26" || cls == "34") return ErrorCode::kInternal;  // our SQL is wrong
  // Connection (08), resources (53), shutdown (57), serialization (40) and the rest.
  return ErrorCode::kIo;
}

}  // namespace

PgParams& PgParams::add(PgType type, std::string_view v) {
  types_.push_back(static_cast<uint32_t>(type));
  values_.emplace_back(v);
  return *this;
}

PgParams& PgParams::int8(int64_t v) { return add(PgType::kInt8, store_be(static_cast<uint64_t>(v), 8)); }

PgParams& PgParams::boolean(bool v) { return add(PgType::kBool, std::string(1, v ? '\1' : '\0')); }

PgResult& PgResult::operator=(PgResult&& other) noexcept {
  if (this != &other) {
    PQclear(res_);
    res_ = std::exchange(other.res_, nullptr);
  }
  return *this;
}

PgResult::~PgResult() { PQclear(res_); }

int PgResult::rows() const { return res_ != nullptr ? PQntuples(res_) : 0; }
int PgResult::columns() const { return res_ != nullptr ? PQnfields(res_) : 0; }

int64_t PgResult::affected() const {
  const char* n = res_ != nullptr ? PQcmdTuples(res_) : "";
  return (n == nullptr || *n == '\0') ? 0 : std::strtoll(n, nullptr, 10);
}

bool PgResult::is_null(int row, int col) const { return PQgetisnull(res_, row, col) != 0; }

Status PgResult::check_types(std::span<const PgType> types, const std::string& label) const {
  if (columns() != static_cast<int>(types.size())) {
    return Unexpected(ErrorCode::kCorrupt, label + ": a query returned " + std::to_string(columns()) +
                                               " columns, expected " + std::to_string(types.size()));
  }
  for (size_t i = 0; i < types.size(); ++i) {
    const auto got = static_cast<uint32_t>(PQftype(res_, static_cast<int>(i)));
    if (got != static_cast<uint32_t>(types[i])) {
      return Unexpected(ErrorCode::kCorrupt, label + ": column " + PQfname(res_, static_cast<int>(i)) +
                                                 " has type oid " + std::to_string(got) + ", expected " +
                                                 std::to_string(static_cast<uint32_t>(types[i])));
    }
  }
  return {};
}

PgType PgResult::type(int col) const { return static_cast<PgType>(PQftype(res_, col)); }

std::string_view PgResult::bytes(int row, int col) const {
  if (is_null(row, col)) return {};
  return {PQgetvalue(res_, row, col), static_cast<size_t>(PQgetlength(res_, row, col))};
}

int64_t PgResult::integer(int row, int col) const {
  const std::string_view b = bytes(row, col);
  // The width follows the declared type; check_types() has vouched for it.
  if (b.size() == 8) return static_cast<int64_t>(load_be(b));
  if (b.size() == 4) return static_cast<int32_t>(static_cast<uint32_t>(load_be(b)));
  if (b.size() == 1) return b[0] != 0 ? 1 : 0;
  return 0;
}

PgConnection::PgConnection(pg_conn* conn, std::string url, std::string label)
    : conn_(conn), url_(std::move(url)), label_(std::move(label)) {}

PgConnection::~PgConnection() { PQfinish(conn_); }

pg_conn* PgConnection::open_conn(const std::string& url, bool synchronous_commit) {
  // Our defaults first: with expand_dbname, the URL's own settings come later and win.
  const std::string timeout = std::to_string(kPgConnectTimeoutS);
  std::string options = "-c statement_timeout=" + std::to_string(kPgStatementTimeoutMs);
  if (!synchronous_commit) options += " -c synchronous_commit=off";
  const std::array<const char*, 6> keys = {"connect_timeout", "application_name", "client_encoding", "options",
                                           "dbname", nullptr};
  const std::array<const char*, 6> values = {timeout.c_str(), "idlefleet", "UTF8", options.c_str(), url.c_str(),
                                             nullptr};
  pg_conn* conn = PQconnectdbParams(keys.data(), values.data(), 1);
  // The server's notices ("relation already exists, skipping") are not errors;
  // libpq would print them on stderr.
  if (conn != nullptr) PQsetNoticeProcessor(conn, [](void*, const char*) {}, nullptr);
  return conn;
}

Result<std::unique_ptr<PgConnection>> PgConnection::connect(const std::string& url, const std::string& store,
                                                           bool synchronous_commit) {
  const std::string label = store + " '" + redact_postgres_url(url) + "'";
  if (url.size() > kStoreLocationBytesMax) {
    return Unexpected(ErrorCode::kInvalidArgument, store + ": the database URL is " + std::to_string(url.size()) +
                                                       " bytes, more than " + std::to_string(kStoreLocationBytesMax));
  }
  char* parse_error = nullptr;
  PQconninfoOption* parsed = PQconninfoParse(url.c_str(), &parse_error);
  if (parsed == nullptr) {
    std::string why = parse_error != nullptr ? trimmed(parse_error) : "out of memory";
    PQfreemem(parse_error);
    return Unexpected(ErrorCode::kInvalidArgument, label + ": not a valid PostgreSQL URL: " + why);
  }
  PQconninfoFree(parsed);
  pg_conn* conn = open_conn(url, synchronous_commit);
  if (conn == nullptr) return Unexpected(ErrorCode::kIo, label + ": cannot allocate a connection");
  if (PQstatus(conn) != CONNECTION_OK) {
    std::string why = trimmed(PQerrorMessage(conn));
    PQfinish(conn);
    return Unexpected(ErrorCode::kIo, label + ": cannot connect: " + why);
  }
  return std::unique_ptr<PgConnection>(new PgConnection(conn, url, label));
}

Unexpected PgConnection::error(const std::string& what, const std::string& detail, ErrorCode code) const {
  return Unexpected(code, label_ + ": " + what + ": " + detail);
}

Unexpected PgConnection::result_error(pg_result* res, const std::string& what) const {
  const char* state = res != nullptr ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : nullptr;
  std::string detail = res != nullptr ? trimmed(PQresultErrorMessage(res)) : "";
  if (detail.empty()) detail = trimmed(PQerrorMessage(conn_));
  if (detail.empty()) detail = "no result";
  ErrorCode code = state != nullptr ? code_for_sqlstate(state) : ErrorCode::kIo;
  if (PQstatus(conn_) != CONNECTION_OK) code = ErrorCode::kIo;
  return error(what, detail, code);
}

Status PgConnection::ensure_connected() {
  if (PQstatus(conn_) == CONNECTION_OK) return {};
  prepared_.clear();
  PQreset(conn_);
  if (PQstatus(conn_) != CONNECTION_OK) {
    return error("reconnecting", trimmed(PQerrorMessage(conn_)), ErrorCode::kIo);
  }
  return {};
}

Result<std::string> PgConnection::prepared(const std::string& sql, const PgParams& params, const std::string& what) {
  IF_RETURN_IF_ERROR(ensure_connected());
  auto it = prepared_.find(sql);
  if (it != prepared_.end()) return it->second;
  std::string name = std::to_string(statements_named_++);
  name.insert(name.begin(), 's');  // (not "s" + ...: g++ 12 warns falsely on that)
  static_assert(sizeof(Oid) == sizeof(uint32_t));  // the type ids are Oids
  PgResult prep(PQprepare(conn_, name.c_str(), sql.c_str(), static_cast<int>(params.size()),
                          params.types_.empty() ? nullptr : reinterpret_cast<const Oid*>(params.types_.data())));
  if (PQresultStatus(prep.res_) != PGRES_COMMAND_OK) return result_error(prep.res_, what);
  prepared_.emplace(sql, name);
  return name;
}

namespace {

// libpq's view of a PgParams: pointers into it, every value binary.
struct Wire {
  std::vector<const char*> values;
  std::vector<int> lengths, formats;
};

}  // namespace

Result<PgResult> PgConnection::exec(const std::string& sql, const PgParams& params, const std::string& what) {
  const size_t n = params.size();
  Wire w{std::vector<const char*>(n), std::vector<int>(n), std::vector<int>(n, 1)};
  for (size_t i = 0; i < n; ++i) {
    w.values[i] = params.values_[i].data();
    w.lengths[i] = static_cast<int>(params.values_[i].size());
  }
  // Twice at most: see the end of the loop.
  for (int attempt = 0;; ++attempt) {
    auto name = prepared(sql, params, what);
    if (!name) return Unexpected(name.error());
    PgResult res(PQexecPrepared(conn_, name->c_str(), static_cast<int>(n), w.values.data(), w.lengths.data(),
                                w.formats.data(), 1));
    const ExecStatusType status = PQresultStatus(res.res_);
    if (status == PGRES_COMMAND_OK || status == PGRES_TUPLES_OK) return res;
    // A table altered since the statement was prepared fails it every time
    // ("cached plan must not change result type", 0A000): outside a
    // transaction, prepare it once more, so that the query reports what it
    // finds now (check_types) instead of failing for as long as the
    // connection lives.
    const char* state = PQresultErrorField(res.res_, PG_DIAG_SQLSTATE);
    if (attempt > 0 || state == nullptr || std::string_view(state) != "0A000" ||
        PQtransactionStatus(conn_) != PQTRANS_IDLE) {
      return result_error(res.res_, what);
    }
    PQclear(PQexec(conn_, ("DEALLOCATE " + *name).c_str()));
    prepared_.erase(sql);
  }
}

Result<PgResult> PgConnection::query(const std::string& sql, const PgParams& params, std::span<const PgType> types,
                                     const std::string& what) {
  auto r = exec(sql, params, what);
  if (!r) return r;
  IF_RETURN_IF_ERROR(r->check_types(types, label_));
  for (int row = 0; row < r->rows(); ++row) {
    for (int col = 0; col < r->columns(); ++col) {
      if (r->is_null(row, col)) {
        return Unexpected(ErrorCode::kCorrupt, label_ + ": " + what + ": column " + PQfname(r->res_, col) +
                                                   " of row " + std::to_string(row + 1) + " is NULL");
      }
    }
  }
  return r;
}

Status PgConnection::exec_each(const std::string& sql, const PgParams& params, const std::string& what,
                               const std::function<Status(const PgResult&)>& row) {
  auto name = prepared(sql, params, what);
  if (!name) return Unexpected(name.error());
  const size_t n = params.size();
  Wire w{std::vector<const char*>(n), std::vector<int>(n), std::vector<int>(n, 1)};
  for (size_t i = 0; i < n; ++i) {
    w.values[i] = params.values_[i].data();
    w.lengths[i] = static_cast<int>(params.values_[i].size());
  }
  if (PQsendQueryPrepared(conn_, name->c_str(), static_cast<int>(n), w.values.data(), w.lengths.data(),
                          w.formats.data(), 1) == 0) {
    return error(what, trimmed(PQerrorMessage(conn_)), ErrorCode::kIo);
  }
  PQsetSingleRowMode(conn_);
  Status status;
  // Every result is read, even after an error, so that the connection is
  // ready for the next statement.
  while (pg_result* r = PQgetResult(conn_)) {
    PgResult res(r);
    switch (PQresultStatus(r)) {
      case PGRES_SINGLE_TUPLE:
        if (status) status = row(res);
        break;
      case PGRES_TUPLES_OK:
      case PGRES_COMMAND_OK:
        break;
      default:
        if (status) status = result_error(r, what);
    }
  }
  return status;
}

Status PgConnection::exec_pipelined(const std::string& sql, std::span<const PgParams> rows, const std::string& what) {
  if (rows.empty()) return {};
  auto name = prepared(sql, rows.front(), what);
  if (!name) return Unexpected(name.error());
  if (PQenterPipelineMode(conn_) != 1) return error(what, trimmed(PQerrorMessage(conn_)), ErrorCode::kIo);
  Status status;
  for (size_t start = 0; start < rows.size() && status; start += kPgPipelineGroupMax) {
    const size_t end = std::min(rows.size(), start + kPgPipelineGroupMax);
    size_t sent = 0;
    for (size_t i = start; i < end; ++i) {
      const PgParams& p = rows[i];
      const size_t n = p.size();
      Wire w{std::vector<const char*>(n), std::vector<int>(n), std::vector<int>(n, 1)};
      for (size_t k = 0; k < n; ++k) {
        w.values[k] = p.values_[k].data();
        w.lengths[k] = static_cast<int>(p.values_[k].size());
      }
      if (PQsendQueryPrepared(conn_, name->c_str(), static_cast<int>(n), w.values.data(), w.lengths.data(),
                              w.formats.data(), 1) == 0) {
        status = error(what, trimmed(PQerrorMessage(conn_)), ErrorCode::kIo);
        break;
      }
      ++sent;
    }
    if (PQpipelineSync(conn_) != 1) {
      if (status) status = error(what, trimmed(PQerrorMessage(conn_)), ErrorCode::kIo);
      break;
    }
    // Each statement's results end with a null; then the sync's own result.
    for (size_t i = 0; i < sent; ++i) {
      while (pg_result* r = PQgetResult(conn_)) {
        PgResult res(r);
        const ExecStatusType st = PQresultStatus(r);
        if (status && st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) {
          // After a failure the rest of the group comes back aborted.
          status = st == PGRES_PIPELINE_ABORTED ? error(what, "aborted", ErrorCode::kIo) : result_error(r, what);
        }
      }
    }
    pg_result* sync = PQgetResult(conn_);
    const bool synced = sync != nullptr && PQresultStatus(sync) == PGRES_PIPELINE_SYNC;
    PQclear(sync);
    if (!synced && status) status = error(what, "the pipeline lost its sync: " + trimmed(PQerrorMessage(conn_)),
                                          ErrorCode::kIo);
    if (!synced) break;
  }
  if (PQexitPipelineMode(conn_) != 1 && status) {
    status = error(what, "cannot leave pipeline mode: " + trimmed(PQerrorMessage(conn_)), ErrorCode::kIo);
  }
  return status;
}

Status PgConnection::exec_script(const char* sql, const std::string& what) {
  IF_RETURN_IF_ERROR(ensure_connected());
  PgResult res(PQexec(conn_, sql));
  const ExecStatusType status = PQresultStatus(res.res_);
  if (status != PGRES_COMMAND_OK && status != PGRES_TUPLES_OK) return result_error(res.res_, what);
  return {};
}

void PgConnection::rollback() {
  if (PQstatus(conn_) != CONNECTION_OK) return;
  if (PQtransactionStatus(conn_) == PQTRANS_IDLE) return;
  PQclear(PQexec(conn_, "ROLLBACK"));
}

Status PgConnection::migrate(std::string_view store_name, std::span<const char* const> migrations) {
  const auto latest = static_cast<int64_t>(migrations.size());
  IF_RETURN_IF_ERROR(begin("starting the migration"));
  auto run = [&]() -> Status {
    IF_RETURN_IF_ERROR(exec("SELECT pg_advisory_xact_lock($1)", PgParams().int8(kMigrationLockKey),
                            "waiting for the migration lock"));
    IF_RETURN_IF_ERROR(exec_script(
        "CREATE TABLE IF NOT EXISTS idlefleet_schema (store TEXT NOT NULL, version INTEGER NOT NULL, "
        "applied_at TIMESTAMPTZ NOT NULL DEFAULT now(), PRIMARY KEY (store, version))",
        "creating idlefleet_schema"));
    auto current = exec("SELECT COALESCE(MAX(version), 0)::int8 FROM idlefleet_schema WHERE store = $1",
                        PgParams().text(store_name), "reading the schema version");
    if (!current) return Unexpected(current.error());
    const int64_t version = current->integer(0, 0);
    if (version > latest) {
      return Unexpected(ErrorCode::kUnsupported, label_ + ": schema version " + std::to_string(version) +
                                                     " is newer than this build's " + std::to_string(latest));
    }
    for (int64_t v = version + 1; v <= latest; ++v) {
      const std::string what = "applying migration " + std::to_string(v);
      IF_RETURN_IF_ERROR(exec_script(migrations[static_cast<size_t>(v - 1)], what));
      IF_RETURN_IF_ERROR(exec("INSERT INTO idlefleet_schema (store, version) VALUES ($1, $2::int4)",
                              PgParams().text(store_name).int8(v), what));
    }
    return commit("committing the migration");
  };
  Status s = run();
  if (!s) rollback();
  return s;
}

}  // namespace idlefleet::store
