#include "store/pg_job_store.h"

#include <array>
#include <utility>

namespace idlefleet::store {
namespace {

// Migration N (1-based) is kMigrations[N - 1], recorded as store "jobs" in
// idlefleet_schema. Shipped entries never change. The partial index's WHERE
// is job_rows::unfinished_where().
constexpr const char* kMigrations[] = {
    R"sql(
CREATE TABLE jobs (
  id TEXT COLLATE "C" PRIMARY KEY NOT NULL,
  kind TEXT NOT NULL,
  model_id BYTEA NOT NULL,
  request_json BYTEA NOT NULL,
  prompt_ids BYTEA NOT NULL,
  max_tokens BIGINT NOT NULL,
  stop_ids BYTEA NOT NULL,
  sampling_json BYTEA NOT NULL,
  batch BOOLEAN NOT NULL,
  state TEXT NOT NULL,
  produced BYTEA NOT NULL,
  finish_reason BYTEA NOT NULL,
  attempts_json BYTEA NOT NULL,
  created_at BIGINT NOT NULL,
  updated_at BIGINT NOT NULL
);
CREATE INDEX jobs_by_created ON jobs (created_at, id);
CREATE INDEX jobs_unfinished ON jobs (created_at, id) WHERE state NOT IN ('done', 'failed', 'cancelled');
CREATE INDEX jobs_by_state ON jobs (state);
CREATE INDEX jobs_done_by_updated ON jobs (updated_at, id) WHERE state = 'done';
)sql",
};
static_assert(std::size(kMigrations) == kPgJobsSchemaVersion, "one migration per schema version");

constexpr const char* kColumns =
    "id, kind, model_id, request_json, prompt_ids, max_tokens, stop_ids, sampling_json, batch, state, "
    "produced, finish_reason, attempts_json, created_at, updated_at";
constexpr std::array kColumnTypes = {
    PgType::kText,  PgType::kText,  PgType::kBytea, PgType::kBytea, PgType::kBytea,
    PgType::kInt8,  PgType::kBytea, PgType::kBytea, PgType::kBool,  PgType::kText,
    PgType::kBytea, PgType::kBytea, PgType::kBytea, PgType::kInt8,  PgType::kInt8,
};

const std::string& upsert_sql() {
  static const std::string sql =
      std::string("INSERT INTO jobs (") + kColumns +
      ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15) "
      "ON CONFLICT (id) DO UPDATE SET kind = excluded.kind, model_id = excluded.model_id, "
      "request_json = excluded.request_json, prompt_ids = excluded.prompt_ids, max_tokens = excluded.max_tokens, "
      "stop_ids = excluded.stop_ids, sampling_json = excluded.sampling_json, batch = excluded.batch, "
      "state = excluded.state, produced = excluded.produced, finish_reason = excluded.finish_reason, "
      "attempts_json = excluded.attempts_json, created_at = excluded.created_at, updated_at = excluded.updated_at";
  return sql;
}

std::string select_sql(const std::string& rest) { return std::string("SELECT ") + kColumns + " FROM jobs " + rest; }

Status read_row(const PgResult& r, int row, StoredJob& job) {
  job.id = r.text(row, 0);
  for (int col = 0; col < r.columns(); ++col) {
    if (r.is_null(row, col)) {
      return Unexpected(ErrorCode::kCorrupt, "job '" + job.id + "': column " + std::to_string(col + 1) + " is NULL");
    }
  }
  job.kind = r.text(row, 1);
  job.model_id = r.text(row, 2);
  job.request_json = r.text(row, 3);
  IF_RETURN_IF_ERROR(job_rows::decode_tokens(job, "prompt_ids", r.bytes(row, 4), job.prompt_ids));
  IF_RETURN_IF_ERROR(job_rows::decode_tokens(job, "stop_ids", r.bytes(row, 6), job.stop_ids));
  job.sampling_json = r.text(row, 7);
  job.state = r.text(row, 9);
  IF_RETURN_IF_ERROR(job_rows::decode_tokens(job, "produced", r.bytes(row, 10), job.produced));
  job.finish_reason = r.text(row, 11);
  job.attempts_json = r.text(row, 12);
  job.created_at = r.integer(row, 13);
  job.updated_at = r.integer(row, 14);
  return job_rows::finish_read(job, r.integer(row, 5), r.integer(row, 8));
}

}  // namespace

Result<std::unique_ptr<PgJobStore>> PgJobStore::open(const std::string& url) {
  job_rows::check_final_states_match_core();
  // Jobs can be made again (their tokens regenerated from the prompt and
  // seed): commits need not wait for the disk, as SQLite's synchronous=NORMAL
  // (job_store.h). A coordinator that crashes loses nothing by it; only a
  // database server that crashes may lose the last fraction of a second.
  auto db = PgConnection::connect(url, "job store", /*synchronous_commit=*/false);
  if (!db) return Unexpected(db.error());
  IF_RETURN_IF_ERROR((*db)->migrate("jobs", kMigrations));
  return std::unique_ptr<PgJobStore>(new PgJobStore(std::move(*db), redact_postgres_url(url)));
}

Status PgJobStore::put(std::span<const StoredJob> jobs) {
  IF_RETURN_IF_ERROR(job_rows::check_put_count(jobs.size(), db_->label()));
  // Validate everything first: a refused batch must leave no trace.
  for (const StoredJob& job : jobs) IF_RETURN_IF_ERROR(job_rows::validate(job));
  if (jobs.empty()) return {};
  IF_RETURN_IF_ERROR(db_->begin("starting a put"));
  Status s = put_in_transaction(jobs);
  if (s) s = db_->commit("committing a put");
  if (!s) db_->rollback();
  return s;
}

Status PgJobStore::put_in_transaction(std::span<const StoredJob> jobs) {
  std::vector<PgParams> rows(jobs.size());
  for (size_t i = 0; i < jobs.size(); ++i) {
    const StoredJob& job = jobs[i];
    PgParams& p = rows[i];
    p.text(job.id).text(job.kind).bytes(job.model_id).bytes(job.request_json);
    p.bytes(job_rows::encode_tokens(job.prompt_ids)).int8(static_cast<int64_t>(job.max_tokens));
    p.bytes(job_rows::encode_tokens(job.stop_ids)).bytes(job.sampling_json).boolean(job.batch).text(job.state);
    p.bytes(job_rows::encode_tokens(job.produced)).bytes(job.finish_reason).bytes(job.attempts_json);
    p.int8(job.created_at).int8(job.updated_at);
  }
  // One round trip per group of rows rather than per row: a put of 10,000
  // jobs took 935 ms a row at a time, here (job_store_test).
  return db_->exec_pipelined(upsert_sql(), rows, "writing jobs");
}

Result<std::vector<StoredJob>> PgJobStore::read_jobs(const std::string& sql, const PgParams& params,
                                                     const std::string& what) {
  auto r = db_->exec(sql, params, what);
  if (!r) return Unexpected(r.error());
  IF_RETURN_IF_ERROR(r->check_types(kColumnTypes, db_->label()));
  std::vector<StoredJob> out(static_cast<size_t>(r->rows()));
  for (int row = 0; row < r->rows(); ++row) {
    if (Status s = read_row(*r, row, out[static_cast<size_t>(row)]); !s) {
      return Unexpected(ErrorCode::kCorrupt, db_->label() + ": " + s.error().message);
    }
  }
  return out;
}

Result<std::optional<StoredJob>> PgJobStore::get(const std::string& id) {
  static const std::string sql = select_sql("WHERE id = $1");
  auto rows = read_jobs(sql, PgParams().text(id), "reading a job");
  if (!rows) return Unexpected(rows.error());
  if (rows->empty()) return std::optional<StoredJob>();
  return std::optional<StoredJob>(std::move(rows->front()));
}

Result<std::vector<StoredJob>> PgJobStore::load_unfinished() {
  static const std::string sql =
      select_sql(std::string("WHERE ") + job_rows::unfinished_where() + " ORDER BY created_at, id");
  return read_jobs(sql, PgParams(), "reading unfinished jobs");
}

Result<std::vector<StoredJob>> PgJobStore::list_recent(size_t limit) {
  IF_RETURN_IF_ERROR(job_rows::check_list_limit(limit, "list_recent", db_->label()));
  static const std::string sql = select_sql("ORDER BY created_at DESC, id DESC LIMIT $1");
  return read_jobs(sql, PgParams().int8(static_cast<int64_t>(limit)), "listing recent jobs");
}

Result<std::vector<StoredJob>> PgJobStore::done_since(core::TimeMs since, size_t limit) {
  IF_RETURN_IF_ERROR(job_rows::check_list_limit(limit, "done_since", db_->label()));
  static const std::string sql = select_sql("WHERE state = 'done' AND updated_at >= $1 ORDER BY updated_at, id LIMIT $2");
  return read_jobs(sql, PgParams().int8(since).int8(static_cast<int64_t>(limit)), "listing done jobs");
}

Result<std::vector<std::string>> PgJobStore::done_job_ids() {
  // One more than the limit tells "too many" from "exactly the limit".
  auto r = db_->exec("SELECT id FROM jobs WHERE state = 'done' ORDER BY id LIMIT $1",
                     PgParams().int8(static_cast<int64_t>(kDoneIdsMax) + 1), "listing done jobs");
  if (!r) return Unexpected(r.error());
  constexpr std::array kTypes = {PgType::kText};
  IF_RETURN_IF_ERROR(r->check_types(kTypes, db_->label()));
  if (static_cast<size_t>(r->rows()) > kDoneIdsMax) {
    return Unexpected(ErrorCode::kOutOfRange,
                      db_->label() + ": more than " + std::to_string(kDoneIdsMax) + " done jobs");
  }
  std::vector<std::string> out;
  out.reserve(static_cast<size_t>(r->rows()));
  for (int row = 0; row < r->rows(); ++row) out.push_back(r->text(row, 0));
  return out;
}

Result<std::map<std::string, uint64_t>> PgJobStore::count_by_state() {
  auto r = db_->exec("SELECT state, COUNT(*) FROM jobs GROUP BY state", "counting jobs");
  if (!r) return Unexpected(r.error());
  constexpr std::array kTypes = {PgType::kText, PgType::kInt8};
  IF_RETURN_IF_ERROR(r->check_types(kTypes, db_->label()));
  std::map<std::string, uint64_t> counts = job_rows::zero_counts();
  for (int row = 0; row < r->rows(); ++row) {
    const std::string state = r->text(row, 0);
    if (!job_rows::known_state(state)) {
      return Unexpected(ErrorCode::kCorrupt, db_->label() + ": unknown job state '" + state + "'");
    }
    counts[state] = static_cast<uint64_t>(r->integer(row, 1));
  }
  return counts;
}

}  // namespace idlefleet::store
