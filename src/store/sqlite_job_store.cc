#include "store/sqlite_job_store.h"

#include <sqlite3.h>

#include <array>
#include <string_view>
#include <utility>

#include "common/check.h"
#include "store/sqlite_db.h"

namespace idlefleet::store {
namespace {

// Migration N (1-based) is kMigrations[N - 1]. Shipped entries never change:
// a file carries their effects, so a new schema is a new entry.
//
// The partial index serves load_unfinished(); its WHERE must stay textually
// the same as job_rows::unfinished_where() for SQLite to use it.
constexpr const char* kMigrations[] = {
    R"sql(
CREATE TABLE jobs (
  id TEXT PRIMARY KEY NOT NULL,
  kind TEXT NOT NULL,
  model_id TEXT NOT NULL,
  request_json TEXT NOT NULL,
  prompt_ids BLOB NOT NULL,
  max_tokens INTEGER NOT NULL,
  stop_ids BLOB NOT NULL,
  sampling_json TEXT NOT NULL,
  batch INTEGER NOT NULL,
  state TEXT NOT NULL,
  produced BLOB NOT NULL,
  finish_reason TEXT NOT NULL,
  attempts_json TEXT NOT NULL,
  created_at INTEGER NOT NULL,
  updated_at INTEGER NOT NULL
) STRICT;
CREATE INDEX jobs_by_created ON jobs(created_at, id);
CREATE INDEX jobs_unfinished ON jobs(created_at, id) WHERE state NOT IN ('done', 'failed', 'cancelled');
CREATE INDEX jobs_by_state ON jobs(state);
)sql",
    // 2: done_since() (the settlement sweep) without scanning every done job.
    R"sql(
CREATE INDEX jobs_done_by_updated ON jobs(updated_at, id) WHERE state = 'done';
)sql",
};
static_assert(std::size(kMigrations) == kSchemaVersion, "one migration per schema version");

constexpr const char* kColumns =
    "id, kind, model_id, request_json, prompt_ids, max_tokens, stop_ids, sampling_json, batch, state, "
    "produced, finish_reason, attempts_json, created_at, updated_at";
enum Column : int {
  kColId, kColKind, kColModelId, kColRequestJson, kColPromptIds, kColMaxTokens, kColStopIds, kColSamplingJson,
  kColBatch, kColState, kColProduced, kColFinishReason, kColAttemptsJson, kColCreatedAt, kColUpdatedAt,
};

// Resets a statement (and drops its bindings) when the scope ends, so that a
// cached statement never holds a read transaction open after an early return.
class StmtScope {
 public:
  explicit StmtScope(sqlite3_stmt* stmt) : stmt_(stmt) {}
  ~StmtScope() {
    sqlite3_reset(stmt_);
    sqlite3_clear_bindings(stmt_);
  }
  StmtScope(const StmtScope&) = delete;
  StmtScope& operator=(const StmtScope&) = delete;

 private:
  sqlite3_stmt* stmt_;
};

}  // namespace

SqliteJobStore::SqliteJobStore(std::string path, sqlite3* db) : path_(std::move(path)), db_(db) {}

SqliteJobStore::~SqliteJobStore() {
  for (sqlite3_stmt* s : {upsert_, get_, unfinished_, recent_, done_since_, count_}) sqlite3_finalize(s);
  // Closing checkpoints the WAL into the main file when this is the last connection.
  sqlite3_close_v2(db_);
}

Unexpected SqliteJobStore::sqlite_error(int rc, const std::string& what) const {
  return store::sqlite_error(db_, rc, label(), what);
}

Status SqliteJobStore::exec(const char* sql, const char* what) {
  return sqlite_exec(db_, sql, label(), what);
}

Result<std::unique_ptr<SqliteJobStore>> SqliteJobStore::open(const std::string& path) {
  job_rows::check_final_states_match_core();
  sqlite3* db = nullptr;
  IF_RETURN_IF_ERROR(open_database(path, kMigrations, "job store '" + path + "'", &db));
  std::unique_ptr<SqliteJobStore> store(new SqliteJobStore(path, db));
  IF_RETURN_IF_ERROR(store->prepare_statements());
  return store;
}

Status SqliteJobStore::prepare_statements() {
  const std::string cols = kColumns;
  const std::string upsert =
      "INSERT INTO jobs (" + cols + ") VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15) "
      "ON CONFLICT (id) DO UPDATE SET kind = excluded.kind, model_id = excluded.model_id, "
      "request_json = excluded.request_json, prompt_ids = excluded.prompt_ids, max_tokens = excluded.max_tokens, "
      "stop_ids = excluded.stop_ids, sampling_json = excluded.sampling_json, batch = excluded.batch, "
      "state = excluded.state, produced = excluded.produced, finish_reason = excluded.finish_reason, "
      "attempts_json = excluded.attempts_json, created_at = excluded.created_at, updated_at = excluded.updated_at";
  const std::pair<sqlite3_stmt**, std::string> statements[] = {
      {&upsert_, upsert},
      {&get_, "SELECT " + cols + " FROM jobs WHERE id = ?1"},
      {&unfinished_, "SELECT " + cols + " FROM jobs WHERE " + job_rows::unfinished_where() + " ORDER BY created_at, id"},
      {&recent_, "SELECT " + cols + " FROM jobs ORDER BY created_at DESC, id DESC LIMIT ?1"},
      {&count_, "SELECT state, COUNT(*) FROM jobs GROUP BY state"},
      {&done_since_, "SELECT " + cols + " FROM jobs WHERE state = 'done' AND updated_at >= ?1 "
                     "ORDER BY updated_at, id LIMIT ?2"},
  };
  for (const auto& [slot, sql] : statements) {
    const int rc = sqlite3_prepare_v3(db_, sql.c_str(), -1, SQLITE_PREPARE_PERSISTENT, slot, nullptr);
    if (rc != SQLITE_OK) return sqlite_error(rc, "preparing statements");
  }
  return {};
}

Status SqliteJobStore::put(std::span<const StoredJob> jobs) {
  IF_RETURN_IF_ERROR(job_rows::check_put_count(jobs.size(), label()));
  // Validate everything first: a refused batch must leave no trace.
  for (const StoredJob& job : jobs) IF_RETURN_IF_ERROR(job_rows::validate(job));
  if (jobs.empty()) return {};
  IF_RETURN_IF_ERROR(exec("BEGIN IMMEDIATE", "starting a put"));
  Status s = put_in_transaction(jobs);
  if (s) s = exec("COMMIT", "committing a put");
  // A failed COMMIT (or a full disk) may already have rolled back.
  if (!s && sqlite3_get_autocommit(db_) == 0) sqlite3_exec(db_, "ROLLBACK", nullptr, nullptr, nullptr);
  return s;
}

Status SqliteJobStore::put_in_transaction(std::span<const StoredJob> jobs) {
  sqlite3_stmt* st = upsert_;
  std::string prompt, stop, produced;
  for (const StoredJob& job : jobs) {
    StmtScope scope(st);
    prompt = job_rows::encode_tokens(job.prompt_ids);
    stop = job_rows::encode_tokens(job.stop_ids);
    produced = job_rows::encode_tokens(job.produced);
    auto text = [&](int col, const std::string& v) {
      return sqlite3_bind_text(st, col + 1, v.data(), static_cast<int>(v.size()), SQLITE_STATIC);
    };
    // A null pointer would bind NULL, so an empty array binds a zero-length blob explicitly.
    auto blob = [&](int col, const std::string& v) {
      return v.empty() ? sqlite3_bind_zeroblob(st, col + 1, 0)
                       : sqlite3_bind_blob(st, col + 1, v.data(), static_cast<int>(v.size()), SQLITE_STATIC);
    };
    const int binds[] = {
        text(kColId, job.id),
        text(kColKind, job.kind),
        text(kColModelId, job.model_id),
        text(kColRequestJson, job.request_json),
        blob(kColPromptIds, prompt),
        sqlite3_bind_int64(st, kColMaxTokens + 1, static_cast<int64_t>(job.max_tokens)),
        blob(kColStopIds, stop),
        text(kColSamplingJson, job.sampling_json),
        sqlite3_bind_int(st, kColBatch + 1, job.batch ? 1 : 0),
        text(kColState, job.state),
        blob(kColProduced, produced),
        text(kColFinishReason, job.finish_reason),
        text(kColAttemptsJson, job.attempts_json),
        sqlite3_bind_int64(st, kColCreatedAt + 1, job.created_at),
        sqlite3_bind_int64(st, kColUpdatedAt + 1, job.updated_at),
    };
    for (int rc : binds) {
      if (rc != SQLITE_OK) return sqlite_error(rc, "binding job '" + job.id + "'");
    }
    const int rc = sqlite3_step(st);
    if (rc != SQLITE_DONE) return sqlite_error(rc, "writing job '" + job.id + "'");
  }
  return {};
}

namespace {

// Reads one row into `job`; the row's columns are in kColumns order.
Status read_row(sqlite3_stmt* st, StoredJob& job) {
  const auto* id_text = sqlite3_column_text(st, kColId);
  job.id.assign(id_text != nullptr ? reinterpret_cast<const char*>(id_text) : "",
                static_cast<size_t>(sqlite3_column_bytes(st, kColId)));
  auto corrupt = [&](const char* column, const std::string& why) {
    return Unexpected(ErrorCode::kCorrupt, "job '" + job.id + "': column " + column + " " + why);
  };
  auto text = [&](int col, const char* name, std::string& out) -> Status {
    if (sqlite3_column_type(st, col) != SQLITE_TEXT) return corrupt(name, "is not text");
    const auto* p = sqlite3_column_text(st, col);
    out.assign(reinterpret_cast<const char*>(p), static_cast<size_t>(sqlite3_column_bytes(st, col)));
    return {};
  };
  auto integer = [&](int col, const char* name, int64_t& out) -> Status {
    if (sqlite3_column_type(st, col) != SQLITE_INTEGER) return corrupt(name, "is not an integer");
    out = sqlite3_column_int64(st, col);
    return {};
  };
  auto tokens = [&](int col, const char* name, std::vector<int32_t>& out) -> Status {
    if (sqlite3_column_type(st, col) != SQLITE_BLOB) return corrupt(name, "is not a blob");
    const auto* p = static_cast<const char*>(sqlite3_column_blob(st, col));
    const auto n = static_cast<size_t>(sqlite3_column_bytes(st, col));
    return job_rows::decode_tokens(job, name, std::string_view(p == nullptr ? "" : p, n), out);
  };
  if (sqlite3_column_type(st, kColId) != SQLITE_TEXT) return corrupt("id", "is not text");
  int64_t max_tokens = 0, batch = 0;
  IF_RETURN_IF_ERROR(text(kColKind, "kind", job.kind));
  IF_RETURN_IF_ERROR(text(kColModelId, "model_id", job.model_id));
  IF_RETURN_IF_ERROR(text(kColRequestJson, "request_json", job.request_json));
  IF_RETURN_IF_ERROR(tokens(kColPromptIds, "prompt_ids", job.prompt_ids));
  IF_RETURN_IF_ERROR(integer(kColMaxTokens, "max_tokens", max_tokens));
  IF_RETURN_IF_ERROR(tokens(kColStopIds, "stop_ids", job.stop_ids));
  IF_RETURN_IF_ERROR(text(kColSamplingJson, "sampling_json", job.sampling_json));
  IF_RETURN_IF_ERROR(integer(kColBatch, "batch", batch));
  IF_RETURN_IF_ERROR(text(kColState, "state", job.state));
  IF_RETURN_IF_ERROR(tokens(kColProduced, "produced", job.produced));
  IF_RETURN_IF_ERROR(text(kColFinishReason, "finish_reason", job.finish_reason));
  IF_RETURN_IF_ERROR(text(kColAttemptsJson, "attempts_json", job.attempts_json));
  IF_RETURN_IF_ERROR(integer(kColCreatedAt, "created_at", job.created_at));
  IF_RETURN_IF_ERROR(integer(kColUpdatedAt, "updated_at", job.updated_at));
  return job_rows::finish_read(job, max_tokens, batch);
}

}  // namespace

Result<std::vector<StoredJob>> SqliteJobStore::read_all(sqlite3_stmt* st) {
  std::vector<StoredJob> out;
  for (;;) {
    const int rc = sqlite3_step(st);
    if (rc == SQLITE_DONE) break;
    if (rc != SQLITE_ROW) return sqlite_error(rc, "reading jobs");
    StoredJob job;
    if (Status s = read_row(st, job); !s) {
      return Unexpected(ErrorCode::kCorrupt, label() + ": " + s.error().message);
    }
    out.push_back(std::move(job));
  }
  return out;
}

Result<std::optional<StoredJob>> SqliteJobStore::get(const std::string& id) {
  StmtScope scope(get_);
  const int rc = sqlite3_bind_text(get_, 1, id.data(), static_cast<int>(id.size()), SQLITE_STATIC);
  if (rc != SQLITE_OK) return sqlite_error(rc, "binding id");
  auto rows = read_all(get_);
  if (!rows) return Unexpected(rows.error());
  DCHECK(rows->size() <= 1);  // id is the primary key
  if (rows->empty()) return std::optional<StoredJob>();
  return std::optional<StoredJob>(std::move(rows->front()));
}

Result<std::vector<StoredJob>> SqliteJobStore::load_unfinished() {
  StmtScope scope(unfinished_);
  return read_all(unfinished_);
}

Result<std::vector<StoredJob>> SqliteJobStore::list_recent(size_t limit) {
  IF_RETURN_IF_ERROR(job_rows::check_list_limit(limit, "list_recent", label()));
  StmtScope scope(recent_);
  const int rc = sqlite3_bind_int64(recent_, 1, static_cast<int64_t>(limit));
  if (rc != SQLITE_OK) return sqlite_error(rc, "binding limit");
  return read_all(recent_);
}

Result<std::vector<StoredJob>> SqliteJobStore::done_since(core::TimeMs since, size_t limit) {
  IF_RETURN_IF_ERROR(job_rows::check_list_limit(limit, "done_since", label()));
  StmtScope scope(done_since_);
  int rc = sqlite3_bind_int64(done_since_, 1, since);
  if (rc == SQLITE_OK) rc = sqlite3_bind_int64(done_since_, 2, static_cast<int64_t>(limit));
  if (rc != SQLITE_OK) return sqlite_error(rc, "binding done_since");
  return read_all(done_since_);
}

Result<std::vector<std::string>> SqliteJobStore::done_job_ids() {
  sqlite3_stmt* st = nullptr;
  int rc = sqlite3_prepare_v2(db_, "SELECT id FROM jobs WHERE state = 'done' ORDER BY id", -1, &st, nullptr);
  if (rc != SQLITE_OK) return sqlite_error(rc, "listing done jobs");
  std::vector<std::string> out;
  for (;;) {
    rc = sqlite3_step(st);
    if (rc != SQLITE_ROW) break;
    if (out.size() >= kDoneIdsMax) {
      sqlite3_finalize(st);
      return Unexpected(ErrorCode::kOutOfRange, label() + ": more than " +
                                                    std::to_string(kDoneIdsMax) + " done jobs");
    }
    const auto* p = sqlite3_column_text(st, 0);
    out.emplace_back(p != nullptr ? reinterpret_cast<const char*>(p) : "", static_cast<size_t>(sqlite3_column_bytes(st, 0)));
  }
  sqlite3_finalize(st);
  if (rc != SQLITE_DONE) return sqlite_error(rc, "listing done jobs");
  return out;
}

Result<std::map<std::string, uint64_t>> SqliteJobStore::count_by_state() {
  std::map<std::string, uint64_t> counts = job_rows::zero_counts();
  StmtScope scope(count_);
  for (;;) {
    const int rc = sqlite3_step(count_);
    if (rc == SQLITE_DONE) break;
    if (rc != SQLITE_ROW) return sqlite_error(rc, "counting jobs");
    const auto* p = sqlite3_column_text(count_, 0);
    const std::string state(p != nullptr ? reinterpret_cast<const char*>(p) : "",
                            static_cast<size_t>(sqlite3_column_bytes(count_, 0)));
    if (!job_rows::known_state(state)) {
      return Unexpected(ErrorCode::kCorrupt, label() + ": unknown job state '" + state + "'");
    }
    counts[state] = static_cast<uint64_t>(sqlite3_column_int64(count_, 1));
  }
  return counts;
}

}  // namespace idlefleet::store
