#include "store/job_store.h"

#include <sqlite3.h>

#include <array>
#include <bit>
#include <cstring>
#include <limits>
#include <string_view>
#include <utility>

#include "common/check.h"
#include "core/job.h"
#include "store/sqlite_db.h"

namespace idlefleet::store {
namespace {

constexpr core::JobState kAllStates[] = {
    core::JobState::kQueued, core::JobState::kAssigned, core::JobState::kRunning, core::JobState::kPreempted,
    core::JobState::kDone,   core::JobState::kFailed,   core::JobState::kCancelled,
};

// Migration N (1-based) is kMigrations[N - 1]. Shipped entries never change:
// a file carries their effects, so a new schema is a new entry.
//
// The partial index serves load_unfinished(); its WHERE must stay textually
// the same as kUnfinishedWhere for SQLite to use it.
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

constexpr const char* kUnfinishedWhere = "state NOT IN ('done', 'failed', 'cancelled')";

// The final states hard-coded in the SQL above must be core's: otherwise
// recovery would skip live jobs or resurrect finished ones.
void check_final_states_match_core() {
  for (core::JobState s : kAllStates) {
    const std::string quoted = std::string("'") + core::job_state_name(s) + "'";
    CHECK(core::job_state_final(s) == (std::strstr(kUnfinishedWhere, quoted.c_str()) != nullptr));
  }
}

constexpr const char* kColumns =
    "id, kind, model_id, request_json, prompt_ids, max_tokens, stop_ids, sampling_json, batch, state, "
    "produced, finish_reason, attempts_json, created_at, updated_at";
enum Column : int {
  kColId, kColKind, kColModelId, kColRequestJson, kColPromptIds, kColMaxTokens, kColStopIds, kColSamplingJson,
  kColBatch, kColState, kColProduced, kColFinishReason, kColAttemptsJson, kColCreatedAt, kColUpdatedAt,
};

bool known_state(std::string_view name) {
  for (core::JobState s : kAllStates) {
    if (name == core::job_state_name(s)) return true;
  }
  return false;
}

bool known_kind(std::string_view kind) { return kind == "completion" || kind == "chat" || kind == "embedding"; }

std::string encode_tokens(std::span<const int32_t> ids) {
  std::string out(ids.size() * 4, '\0');
  if constexpr (std::endian::native == std::endian::little) {
    if (!ids.empty()) std::memcpy(out.data(), ids.data(), out.size());
  } else {
    for (size_t i = 0; i < ids.size(); ++i) {
      const auto u = static_cast<uint32_t>(ids[i]);
      for (int b = 0; b < 4; ++b) out[i * 4 + b] = static_cast<char>((u >> (8 * b)) & 0xff);
    }
  }
  return out;
}

void decode_tokens(const unsigned char* bytes, size_t n_bytes, std::vector<int32_t>& out) {
  out.resize(n_bytes / 4);
  if constexpr (std::endian::native == std::endian::little) {
    if (n_bytes != 0) std::memcpy(out.data(), bytes, n_bytes);
  } else {
    for (size_t i = 0; i < out.size(); ++i) {
      uint32_t u = 0;
      for (int b = 0; b < 4; ++b) u |= static_cast<uint32_t>(bytes[i * 4 + b]) << (8 * b);
      out[i] = static_cast<int32_t>(u);
    }
  }
}

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

Status check_bytes(const StoredJob& job, const char* field, size_t bytes, size_t max) {
  if (bytes <= max) return {};
  return Unexpected(ErrorCode::kOutOfRange, "job '" + job.id.substr(0, kIdBytesMax) + "': " + field + " is " +
                                                std::to_string(bytes) + " bytes, more than " + std::to_string(max));
}

Status check_tokens(const StoredJob& job, const char* field, size_t count) {
  if (count <= kTokensMax) return {};
  return Unexpected(ErrorCode::kOutOfRange, "job '" + job.id + "': " + field + " has " + std::to_string(count) +
                                                " tokens, more than " + std::to_string(kTokensMax));
}

Status validate(const StoredJob& job) {
  if (job.id.empty()) return Unexpected(ErrorCode::kInvalidArgument, "job with an empty id");
  IF_RETURN_IF_ERROR(check_bytes(job, "id", job.id.size(), kIdBytesMax));
  IF_RETURN_IF_ERROR(check_bytes(job, "kind", job.kind.size(), kKindBytesMax));
  if (!known_kind(job.kind)) {
    return Unexpected(ErrorCode::kInvalidArgument, "job '" + job.id + "': unknown kind '" + job.kind + "'");
  }
  IF_RETURN_IF_ERROR(check_bytes(job, "model_id", job.model_id.size(), kModelIdBytesMax));
  IF_RETURN_IF_ERROR(check_bytes(job, "request_json", job.request_json.size(), kRequestJsonBytesMax));
  IF_RETURN_IF_ERROR(check_bytes(job, "sampling_json", job.sampling_json.size(), kSamplingJsonBytesMax));
  IF_RETURN_IF_ERROR(check_bytes(job, "attempts_json", job.attempts_json.size(), kAttemptsJsonBytesMax));
  IF_RETURN_IF_ERROR(check_bytes(job, "finish_reason", job.finish_reason.size(), kFinishReasonBytesMax));
  IF_RETURN_IF_ERROR(check_tokens(job, "prompt_ids", job.prompt_ids.size()));
  IF_RETURN_IF_ERROR(check_tokens(job, "stop_ids", job.stop_ids.size()));
  IF_RETURN_IF_ERROR(check_tokens(job, "produced", job.produced.size()));
  if (job.max_tokens > kMaxTokensMax) {
    return Unexpected(ErrorCode::kOutOfRange, "job '" + job.id + "': max_tokens " + std::to_string(job.max_tokens) +
                                                  " is more than " + std::to_string(kMaxTokensMax));
  }
  if (!known_state(job.state)) {
    return Unexpected(ErrorCode::kInvalidArgument, "job '" + job.id + "': unknown state '" + job.state + "'");
  }
  return {};
}

}  // namespace

JobStore::JobStore(std::string path, sqlite3* db) : path_(std::move(path)), db_(db) {}

JobStore::~JobStore() {
  for (sqlite3_stmt* s : {upsert_, get_, unfinished_, recent_, done_since_, count_}) sqlite3_finalize(s);
  // Closing checkpoints the WAL into the main file when this is the last connection.
  sqlite3_close_v2(db_);
}

Unexpected JobStore::sqlite_error(int rc, const std::string& what) const {
  return store::sqlite_error(db_, rc, "job store '" + path_ + "'", what);
}

Status JobStore::exec(const char* sql, const char* what) {
  return sqlite_exec(db_, sql, "job store '" + path_ + "'", what);
}

Result<std::unique_ptr<JobStore>> JobStore::open(const std::string& path) {
  check_final_states_match_core();
  sqlite3* db = nullptr;
  IF_RETURN_IF_ERROR(open_database(path, kMigrations, "job store '" + path + "'", &db));
  std::unique_ptr<JobStore> store(new JobStore(path, db));
  IF_RETURN_IF_ERROR(store->prepare_statements());
  return store;
}

Status JobStore::prepare_statements() {
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
      {&unfinished_, "SELECT " + cols + " FROM jobs WHERE " + kUnfinishedWhere + " ORDER BY created_at, id"},
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

Status JobStore::put(std::span<const StoredJob> jobs) {
  if (jobs.size() > kPutJobsMax) {
    return Unexpected(ErrorCode::kOutOfRange, "job store '" + path_ + "': put of " + std::to_string(jobs.size()) +
                                                  " jobs, more than " + std::to_string(kPutJobsMax));
  }
  // Validate everything first: a refused batch must leave no trace.
  for (const StoredJob& job : jobs) IF_RETURN_IF_ERROR(validate(job));
  if (jobs.empty()) return {};
  IF_RETURN_IF_ERROR(exec("BEGIN IMMEDIATE", "starting a put"));
  Status s = put_in_transaction(jobs);
  if (s) s = exec("COMMIT", "committing a put");
  // A failed COMMIT (or a full disk) may already have rolled back.
  if (!s && sqlite3_get_autocommit(db_) == 0) sqlite3_exec(db_, "ROLLBACK", nullptr, nullptr, nullptr);
  return s;
}

Status JobStore::put_in_transaction(std::span<const StoredJob> jobs) {
  sqlite3_stmt* st = upsert_;
  std::string prompt, stop, produced;
  for (const StoredJob& job : jobs) {
    StmtScope scope(st);
    prompt = encode_tokens(job.prompt_ids);
    stop = encode_tokens(job.stop_ids);
    produced = encode_tokens(job.produced);
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
    const auto* p = static_cast<const unsigned char*>(sqlite3_column_blob(st, col));
    const auto n = static_cast<size_t>(sqlite3_column_bytes(st, col));
    if (n % 4 != 0) return corrupt(name, "is " + std::to_string(n) + " bytes, not a multiple of 4");
    if (n / 4 > kTokensMax) return corrupt(name, "holds " + std::to_string(n / 4) + " tokens, more than the limit");
    decode_tokens(p, n, out);
    return {};
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
  if (max_tokens < 0 || static_cast<uint64_t>(max_tokens) > kMaxTokensMax) {
    return corrupt("max_tokens", "is " + std::to_string(max_tokens) + ", out of range");
  }
  if (batch != 0 && batch != 1) return corrupt("batch", "is " + std::to_string(batch) + ", not 0 or 1");
  if (!known_state(job.state)) return corrupt("state", "is '" + job.state + "', not a job state");
  job.max_tokens = static_cast<uint64_t>(max_tokens);
  job.batch = batch == 1;
  return {};
}

}  // namespace

Result<std::vector<StoredJob>> JobStore::read_all(sqlite3_stmt* st) {
  std::vector<StoredJob> out;
  for (;;) {
    const int rc = sqlite3_step(st);
    if (rc == SQLITE_DONE) break;
    if (rc != SQLITE_ROW) return sqlite_error(rc, "reading jobs");
    StoredJob job;
    if (Status s = read_row(st, job); !s) {
      return Unexpected(ErrorCode::kCorrupt, "job store '" + path_ + "': " + s.error().message);
    }
    out.push_back(std::move(job));
  }
  return out;
}

Result<std::optional<StoredJob>> JobStore::get(const std::string& id) {
  StmtScope scope(get_);
  const int rc = sqlite3_bind_text(get_, 1, id.data(), static_cast<int>(id.size()), SQLITE_STATIC);
  if (rc != SQLITE_OK) return sqlite_error(rc, "binding id");
  auto rows = read_all(get_);
  if (!rows) return Unexpected(rows.error());
  DCHECK(rows->size() <= 1);  // id is the primary key
  if (rows->empty()) return std::optional<StoredJob>();
  return std::optional<StoredJob>(std::move(rows->front()));
}

Result<std::vector<StoredJob>> JobStore::load_unfinished() {
  StmtScope scope(unfinished_);
  return read_all(unfinished_);
}

Result<std::vector<StoredJob>> JobStore::list_recent(size_t limit) {
  if (limit > kListRecentJobsMax) {
    return Unexpected(ErrorCode::kOutOfRange, "job store '" + path_ + "': list_recent limit " + std::to_string(limit) +
                                                  " is more than " + std::to_string(kListRecentJobsMax));
  }
  StmtScope scope(recent_);
  const int rc = sqlite3_bind_int64(recent_, 1, static_cast<int64_t>(limit));
  if (rc != SQLITE_OK) return sqlite_error(rc, "binding limit");
  return read_all(recent_);
}

Result<std::vector<StoredJob>> JobStore::done_since(core::TimeMs since, size_t limit) {
  if (limit > kListRecentJobsMax) {
    return Unexpected(ErrorCode::kOutOfRange, "job store '" + path_ + "': done_since limit " + std::to_string(limit) +
                                                  " is more than " + std::to_string(kListRecentJobsMax));
  }
  StmtScope scope(done_since_);
  int rc = sqlite3_bind_int64(done_since_, 1, since);
  if (rc == SQLITE_OK) rc = sqlite3_bind_int64(done_since_, 2, static_cast<int64_t>(limit));
  if (rc != SQLITE_OK) return sqlite_error(rc, "binding done_since");
  return read_all(done_since_);
}

Result<std::vector<std::string>> JobStore::done_job_ids() {
  sqlite3_stmt* st = nullptr;
  int rc = sqlite3_prepare_v2(db_, "SELECT id FROM jobs WHERE state = 'done' ORDER BY id", -1, &st, nullptr);
  if (rc != SQLITE_OK) return sqlite_error(rc, "listing done jobs");
  std::vector<std::string> out;
  for (;;) {
    rc = sqlite3_step(st);
    if (rc != SQLITE_ROW) break;
    if (out.size() >= kDoneIdsMax) {
      sqlite3_finalize(st);
      return Unexpected(ErrorCode::kOutOfRange, "job store '" + path_ + "': more than " +
                                                    std::to_string(kDoneIdsMax) + " done jobs");
    }
    const auto* p = sqlite3_column_text(st, 0);
    out.emplace_back(p != nullptr ? reinterpret_cast<const char*>(p) : "", static_cast<size_t>(sqlite3_column_bytes(st, 0)));
  }
  sqlite3_finalize(st);
  if (rc != SQLITE_DONE) return sqlite_error(rc, "listing done jobs");
  return out;
}

Result<std::map<std::string, uint64_t>> JobStore::count_by_state() {
  std::map<std::string, uint64_t> counts;
  for (core::JobState s : kAllStates) counts[core::job_state_name(s)] = 0;
  StmtScope scope(count_);
  for (;;) {
    const int rc = sqlite3_step(count_);
    if (rc == SQLITE_DONE) break;
    if (rc != SQLITE_ROW) return sqlite_error(rc, "counting jobs");
    const auto* p = sqlite3_column_text(count_, 0);
    const std::string state(p != nullptr ? reinterpret_cast<const char*>(p) : "",
                            static_cast<size_t>(sqlite3_column_bytes(count_, 0)));
    if (!known_state(state)) {
      return Unexpected(ErrorCode::kCorrupt, "job store '" + path_ + "': unknown job state '" + state + "'");
    }
    counts[state] = static_cast<uint64_t>(sqlite3_column_int64(count_, 1));
  }
  return counts;
}

}  // namespace idlefleet::store
