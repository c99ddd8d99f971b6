#include "store/pg_file_store.h"

#include <array>
#include <utility>

namespace idlefleet::store {
namespace {

// Migration N (1-based) is kMigrations[N - 1], recorded as store "files" in
// idlefleet_schema. Shipped entries never change. The one migration is
// SQLite's two together.
constexpr const char* kMigrations[] = {
    R"sql(
CREATE TABLE files (
  id BYTEA PRIMARY KEY NOT NULL,
  purpose BYTEA NOT NULL,
  filename BYTEA NOT NULL,
  bytes BIGINT NOT NULL,
  created_at BIGINT NOT NULL,
  content BYTEA NOT NULL,
  owner BYTEA NOT NULL
);
CREATE INDEX files_by_created ON files (created_at, id);
CREATE TABLE batches (
  id BYTEA PRIMARY KEY NOT NULL,
  status BYTEA NOT NULL,
  created_at BIGINT NOT NULL,
  object_json BYTEA NOT NULL,
  owner BYTEA NOT NULL
);
CREATE INDEX batches_by_created ON batches (created_at, id);
CREATE TABLE batch_lines (
  batch_id BYTEA NOT NULL,
  line BIGINT NOT NULL,
  state TEXT COLLATE "C" NOT NULL,
  custom_id BYTEA NOT NULL,
  job_id BYTEA NOT NULL,
  body BYTEA NOT NULL,
  result BYTEA NOT NULL,
  PRIMARY KEY (batch_id, line)
);
)sql",
};
static_assert(std::size(kMigrations) == kPgFilesSchemaVersion, "one migration per schema version");

constexpr const char* kFileColumns = "id, purpose, filename, bytes, created_at, owner";
constexpr std::array kFileTypes = {PgType::kBytea, PgType::kBytea, PgType::kBytea,
                                   PgType::kInt8,  PgType::kInt8,  PgType::kBytea};
constexpr const char* kBatchColumns = "id, status, created_at, object_json, owner";
constexpr std::array kBatchTypes = {PgType::kBytea, PgType::kBytea, PgType::kInt8, PgType::kBytea, PgType::kBytea};

std::string file_sql(const std::string& rest) { return std::string("SELECT ") + kFileColumns + " FROM files " + rest; }

std::string batch_sql(const std::string& rest) {
  return std::string("SELECT ") + kBatchColumns + " FROM batches " + rest;
}

}  // namespace

Result<std::unique_ptr<PgFileStore>> PgFileStore::open(const std::string& url) {
  auto db = PgConnection::connect(url, "file store");
  if (!db) return Unexpected(db.error());
  IF_RETURN_IF_ERROR((*db)->migrate("files", kMigrations));
  return std::unique_ptr<PgFileStore>(new PgFileStore(std::move(*db), redact_postgres_url(url)));
}

Status PgFileStore::put_file(const StoredFile& f, std::string_view content) {
  IF_RETURN_IF_ERROR(file_rows::check_file(f, content));
  PgParams p;
  p.bytes(f.id).bytes(f.purpose).bytes(f.filename).int8(static_cast<int64_t>(f.bytes)).int8(f.created_at);
  p.bytes(content).bytes(f.owner);
  // A stored id is a unique violation: kAlreadyExists (pg_db.h).
  auto r = db_->exec(
      "INSERT INTO files (id, purpose, filename, bytes, created_at, content, owner) "
      "VALUES ($1, $2, $3, $4, $5, $6, $7)",
      p, "writing file " + f.id);
  if (!r) return Unexpected(r.error());
  return {};
}

Result<std::vector<StoredFile>> PgFileStore::read_files(const std::string& sql, const PgParams& params,
                                                        const std::string& what) {
  auto r = db_->query(sql, params, kFileTypes, what);
  if (!r) return Unexpected(r.error());
  std::vector<StoredFile> out(static_cast<size_t>(r->rows()));
  for (int row = 0; row < r->rows(); ++row) {
    StoredFile& f = out[static_cast<size_t>(row)];
    f.id = r->text(row, 0);
    f.purpose = r->text(row, 1);
    f.filename = r->text(row, 2);
    f.created_at = r->integer(row, 4);
    f.owner = r->text(row, 5);
    IF_RETURN_IF_ERROR(file_rows::check_file_row(f, r->integer(row, 3), db_->label()));
  }
  return out;
}

Result<std::optional<StoredFile>> PgFileStore::get_file(const std::string& id) {
  static const std::string sql = file_sql("WHERE id = $1");
  auto files = read_files(sql, PgParams().bytes(id), "reading file " + id);
  if (!files) return Unexpected(files.error());
  if (files->empty()) return std::optional<StoredFile>();
  return std::optional<StoredFile>(std::move(files->front()));
}

Result<std::optional<std::string>> PgFileStore::file_content(const std::string& id) {
  constexpr std::array kTypes = {PgType::kBytea, PgType::kInt8};
  auto r = db_->query("SELECT content, bytes FROM files WHERE id = $1", PgParams().bytes(id), kTypes,
                      "reading file " + id);
  if (!r) return Unexpected(r.error());
  if (r->rows() == 0) return std::optional<std::string>();
  std::string content = r->text(0, 0);
  IF_RETURN_IF_ERROR(file_rows::check_content(id, content.size(), r->integer(0, 1), db_->label()));
  return std::optional<std::string>(std::move(content));
}

Result<bool> PgFileStore::delete_file(const std::string& id) {
  auto r = db_->exec("DELETE FROM files WHERE id = $1", PgParams().bytes(id), "deleting file " + id);
  if (!r) return Unexpected(r.error());
  return r->affected() > 0;
}

Result<std::vector<StoredFile>> PgFileStore::list_files(const std::string& owner, const std::string& purpose,
                                                        size_t limit) {
  IF_RETURN_IF_ERROR(file_rows::check_list_limit(limit, "files"));
  static const std::string sql =
      file_sql("WHERE owner = $3 AND ($1 = ''::bytea OR purpose = $1) ORDER BY created_at DESC, id DESC LIMIT $2");
  return read_files(sql, PgParams().bytes(purpose).int8(static_cast<int64_t>(limit)).bytes(owner), "listing files");
}

Status PgFileStore::put_batch(const StoredBatch& b, std::span<const StoredBatchLine> lines) {
  IF_RETURN_IF_ERROR(file_rows::check_batch(b, lines));
  IF_RETURN_IF_ERROR(db_->begin("starting a batch write"));
  Status s = put_in_transaction(b, lines);
  if (s) s = db_->commit("committing a batch write");
  if (!s) db_->rollback();
  return s;
}

Status PgFileStore::put_in_transaction(const StoredBatch& b, std::span<const StoredBatchLine> lines) {
  auto r = db_->exec(
      "INSERT INTO batches (id, status, created_at, object_json, owner) VALUES ($1, $2, $3, $4, $5) "
      "ON CONFLICT (id) DO UPDATE SET status = excluded.status, object_json = excluded.object_json",
      PgParams().bytes(b.id).bytes(b.status).int8(b.created_at).bytes(b.object_json).bytes(b.owner),
      "writing batch " + b.id);
  if (!r) return Unexpected(r.error());
  for (const StoredBatchLine& line : lines) {
    PgParams p;
    p.bytes(line.batch_id).int8(static_cast<int64_t>(line.line)).text(line.state).bytes(line.custom_id);
    p.bytes(line.job_id).bytes(line.body).bytes(line.result);
    auto w = db_->exec(
        "INSERT INTO batch_lines (batch_id, line, state, custom_id, job_id, body, result) "
        "VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (batch_id, line) DO UPDATE SET state = excluded.state, "
        "custom_id = excluded.custom_id, job_id = excluded.job_id, body = excluded.body, result = excluded.result",
        p, "writing a line of batch " + b.id);
    if (!w) return Unexpected(w.error());
  }
  return {};
}

Result<std::vector<StoredBatch>> PgFileStore::read_batches(const std::string& sql, const PgParams& params,
                                                           const std::string& what) {
  auto r = db_->query(sql, params, kBatchTypes, what);
  if (!r) return Unexpected(r.error());
  std::vector<StoredBatch> out;
  out.reserve(static_cast<size_t>(r->rows()));
  for (int row = 0; row < r->rows(); ++row) {
    out.push_back({r->text(row, 0), r->text(row, 1), r->integer(row, 2), r->text(row, 3), r->text(row, 4)});
    IF_RETURN_IF_ERROR(file_rows::check_batch_row(out.back(), db_->label()));
  }
  return out;
}

Result<std::optional<StoredBatch>> PgFileStore::get_batch(const std::string& id) {
  static const std::string sql = batch_sql("WHERE id = $1");
  auto all = read_batches(sql, PgParams().bytes(id), "reading batch " + id);
  if (!all) return Unexpected(all.error());
  if (all->empty()) return std::optional<StoredBatch>();
  return std::optional<StoredBatch>(std::move(all->front()));
}

Result<std::vector<StoredBatch>> PgFileStore::list_batches(const std::string& owner, size_t limit, int64_t before) {
  IF_RETURN_IF_ERROR(file_rows::check_list_limit(limit, "batches"));
  static const std::string sql =
      batch_sql("WHERE owner = $3 AND ($1 = 0 OR created_at < $1) ORDER BY created_at DESC, id DESC LIMIT $2");
  return read_batches(sql, PgParams().int8(before).int8(static_cast<int64_t>(limit)).bytes(owner),
                      "listing batches");
}

Result<std::vector<StoredBatch>> PgFileStore::load_unfinished_batches() {
  static const std::string sql =
      batch_sql(std::string("WHERE ") + file_rows::unfinished_where() + " ORDER BY created_at, id");
  return read_batches(sql, PgParams(), "reading the unfinished batches");
}

Result<std::vector<StoredBatchLine>> PgFileStore::batch_lines(const std::string& batch_id) {
  constexpr std::array kTypes = {PgType::kBytea, PgType::kInt8,  PgType::kText, PgType::kBytea,
                                 PgType::kBytea, PgType::kBytea, PgType::kBytea};
  auto r = db_->query(
      "SELECT batch_id, line, state, custom_id, job_id, body, result FROM batch_lines WHERE batch_id = $1 "
      "ORDER BY line",
      PgParams().bytes(batch_id), kTypes, "reading the lines of batch " + batch_id);
  if (!r) return Unexpected(r.error());
  std::vector<StoredBatchLine> out(static_cast<size_t>(r->rows()));
  for (int row = 0; row < r->rows(); ++row) {
    StoredBatchLine& l = out[static_cast<size_t>(row)];
    l.batch_id = r->text(row, 0);
    l.state = r->text(row, 2);
    l.custom_id = r->text(row, 3);
    l.job_id = r->text(row, 4);
    l.body = r->text(row, 5);
    l.result = r->text(row, 6);
    IF_RETURN_IF_ERROR(file_rows::check_line_row(l, r->integer(row, 1), db_->label()));
  }
  return out;
}

}  // namespace idlefleet::store
