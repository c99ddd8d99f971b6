#include "store/sqlite_file_store.h"

#include <sqlite3.h>

#include <utility>

#include "store/sqlite_db.h"

namespace idlefleet::store {
namespace {

// Migration N (1-based) is kMigrations[N - 1]; shipped entries never change.
constexpr const char* kMigrations[] = {
    R"sql(
CREATE TABLE files (
  id TEXT PRIMARY KEY NOT NULL,
  purpose TEXT NOT NULL,
  filename TEXT NOT NULL,
  bytes INTEGER NOT NULL,
  created_at INTEGER NOT NULL,
  content BLOB NOT NULL
) STRICT;
CREATE INDEX files_by_created ON files(created_at, id);
CREATE TABLE batches (
  id TEXT PRIMARY KEY NOT NULL,
  status TEXT NOT NULL,
  created_at INTEGER NOT NULL,
  object_json TEXT NOT NULL
) STRICT;
CREATE INDEX batches_by_created ON batches(created_at, id);
CREATE TABLE batch_lines (
  batch_id TEXT NOT NULL,
  line INTEGER NOT NULL,
  state TEXT NOT NULL,
  custom_id TEXT NOT NULL,
  job_id TEXT NOT NULL,
  body TEXT NOT NULL,
  result TEXT NOT NULL,
  PRIMARY KEY (batch_id, line)
) STRICT;
)sql",
    R"sql(
ALTER TABLE files ADD COLUMN owner TEXT NOT NULL DEFAULT '';
ALTER TABLE batches ADD COLUMN owner TEXT NOT NULL DEFAULT '';
)sql",
};

using Stmt = Statement;

}  // namespace

SqliteFileStore::SqliteFileStore(std::string path, sqlite3* db) : path_(std::move(path)), db_(db) {}
SqliteFileStore::~SqliteFileStore() { sqlite3_close_v2(db_); }

Unexpected SqliteFileStore::error(int rc, const std::string& what) const {
  return sqlite_error(db_, rc, label(), what);
}

Status SqliteFileStore::exec(const char* sql, const char* what) { return sqlite_exec(db_, sql, label(), what); }

Result<std::unique_ptr<SqliteFileStore>> SqliteFileStore::open(const std::string& path) {
  sqlite3* db = nullptr;
  IF_RETURN_IF_ERROR(open_database(path, kMigrations, "file store '" + path + "'", &db));
  return std::unique_ptr<SqliteFileStore>(new SqliteFileStore(path, db));
}

Status SqliteFileStore::put_file(const StoredFile& f, std::string_view content) {
  IF_RETURN_IF_ERROR(file_rows::check_file(f, content));
  Stmt s(db_,
         "INSERT INTO files (id, purpose, filename, bytes, created_at, content, owner) "
         "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)");
  if (s.prepared() != SQLITE_OK) return error(s.prepared(), "preparing a file insert");
  s.text(1, f.id);
  s.text(2, f.purpose);
  s.text(3, f.filename);
  s.integer(4, static_cast<int64_t>(f.bytes));
  s.integer(5, f.created_at);
  s.blob(6, content);
  s.text(7, f.owner);
  if (int rc = s.step(); rc != SQLITE_DONE) {
    // The primary key refused the id, as PostgreSQL's unique violation does.
    if ((rc & 0xff) == SQLITE_CONSTRAINT) {
      return Unexpected(ErrorCode::kAlreadyExists, label() + ": file '" + f.id + "' already exists");
    }
    return error(rc, "writing file " + f.id);
  }
  return {};
}

namespace {
Result<StoredFile> read_file_row(const Stmt& s, const std::string& path) {
  StoredFile f;
  f.id = s.column_text(0);
  f.purpose = s.column_text(1);
  f.filename = s.column_text(2);
  const int64_t bytes = s.column_int(3);
  f.created_at = s.column_int(4);
  f.owner = s.column_text(5);
  IF_RETURN_IF_ERROR(file_rows::check_file_row(f, bytes, "file store '" + path + "'"));
  return f;
}
}  // namespace

Result<std::optional<StoredFile>> SqliteFileStore::get_file(const std::string& id) {
  Stmt s(db_, "SELECT id, purpose, filename, bytes, created_at, owner FROM files WHERE id = ?1");
  if (s.prepared() != SQLITE_OK) return error(s.prepared(), "preparing a file read");
  s.text(1, id);
  const int rc = s.step();
  if (rc == SQLITE_DONE) return std::optional<StoredFile>();
  if (rc != SQLITE_ROW) return error(rc, "reading file " + id);
  auto f = read_file_row(s, path_);
  if (!f) return Unexpected(f.error());
  return std::optional<StoredFile>(std::move(*f));
}

Result<std::optional<std::string>> SqliteFileStore::file_content(const std::string& id) {
  Stmt s(db_, "SELECT content, bytes FROM files WHERE id = ?1");
  if (s.prepared() != SQLITE_OK) return error(s.prepared(), "preparing a file read");
  s.text(1, id);
  const int rc = s.step();
  if (rc == SQLITE_DONE) return std::optional<std::string>();
  if (rc != SQLITE_ROW) return error(rc, "reading file " + id);
  std::string content = s.column_text(0);
  IF_RETURN_IF_ERROR(file_rows::check_content(id, content.size(), s.column_int(1), label()));
  return std::optional<std::string>(std::move(content));
}

Result<bool> SqliteFileStore::delete_file(const std::string& id) {
  Stmt s(db_, "DELETE FROM files WHERE id = ?1");
  if (s.prepared() != SQLITE_OK) return error(s.prepared(), "preparing a file delete");
  s.text(1, id);
  if (int rc = s.step(); rc != SQLITE_DONE) return error(rc, "deleting file " + id);
  return sqlite3_changes(db_) > 0;
}

Result<std::vector<StoredFile>> SqliteFileStore::list_files(const std::string& owner, const std::string& purpose,
                                                     size_t limit) {
  IF_RETURN_IF_ERROR(file_rows::check_list_limit(limit, "files"));
  Stmt s(db_,
         "SELECT id, purpose, filename, bytes, created_at, owner FROM files WHERE owner = ?3 AND "
         "(?1 = '' OR purpose = ?1) ORDER BY created_at DESC, id DESC LIMIT ?2");
  if (s.prepared() != SQLITE_OK) return error(s.prepared(), "preparing the file list");
  s.text(1, purpose);
  s.integer(2, static_cast<int64_t>(limit));
  s.text(3, owner);
  std::vector<StoredFile> out;
  for (int rc = s.step();; rc = s.step()) {
    if (rc == SQLITE_DONE) break;
    if (rc != SQLITE_ROW) return error(rc, "listing files");
    auto f = read_file_row(s, path_);
    if (!f) return Unexpected(f.error());
    out.push_back(std::move(*f));
  }
  return out;
}

Status SqliteFileStore::put_batch(const StoredBatch& b, std::span<const StoredBatchLine> lines) {
  IF_RETURN_IF_ERROR(file_rows::check_batch(b, lines));
  IF_RETURN_IF_ERROR(exec("BEGIN IMMEDIATE", "starting a batch write"));
  Status st = put_in_transaction(b, lines);
  if (!st) {
    sqlite3_exec(db_, "ROLLBACK", nullptr, nullptr, nullptr);
    return st;
  }
  return exec("COMMIT", "committing a batch write");
}

Status SqliteFileStore::put_in_transaction(const StoredBatch& b, std::span<const StoredBatchLine> lines) {
  Stmt s(db_,
         "INSERT INTO batches (id, status, created_at, object_json, owner) VALUES (?1, ?2, ?3, ?4, ?5) "
         "ON CONFLICT (id) DO UPDATE SET status = excluded.status, object_json = excluded.object_json");
  if (s.prepared() != SQLITE_OK) return error(s.prepared(), "preparing a batch write");
  s.text(1, b.id);
  s.text(2, b.status);
  s.integer(3, b.created_at);
  s.text(4, b.object_json);
  s.text(5, b.owner);
  if (int rc = s.step(); rc != SQLITE_DONE) return error(rc, "writing batch " + b.id);
  if (lines.empty()) return {};
  Stmt l(db_,
         "INSERT INTO batch_lines (batch_id, line, state, custom_id, job_id, body, result) "
         "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) ON CONFLICT (batch_id, line) DO UPDATE SET state = excluded.state, "
         "custom_id = excluded.custom_id, job_id = excluded.job_id, body = excluded.body, result = excluded.result");
  if (l.prepared() != SQLITE_OK) return error(l.prepared(), "preparing a batch line write");
  for (const StoredBatchLine& line : lines) {
    sqlite3_reset(l.get());
    l.text(1, line.batch_id);
    l.integer(2, static_cast<int64_t>(line.line));
    l.text(3, line.state);
    l.text(4, line.custom_id);
    l.text(5, line.job_id);
    l.text(6, line.body);
    l.text(7, line.result);
    if (int rc = l.step(); rc != SQLITE_DONE) return error(rc, "writing a line of batch " + b.id);
  }
  return {};
}

namespace {
Result<std::vector<StoredBatch>> read_batches(Stmt& s, const std::string& path) {
  std::vector<StoredBatch> out;
  for (int rc = s.step();; rc = s.step()) {
    if (rc == SQLITE_DONE) break;
    if (rc != SQLITE_ROW) {
      return Unexpected(ErrorCode::kIo, "file store '" + path + "': reading batches: " + sqlite3_errstr(rc));
    }
    out.push_back({s.column_text(0), s.column_text(1), s.column_int(2), s.column_text(3), s.column_text(4)});
    IF_RETURN_IF_ERROR(file_rows::check_batch_row(out.back(), "file store '" + path + "'"));
  }
  return out;
}
}  // namespace

Result<std::optional<StoredBatch>> SqliteFileStore::get_batch(const std::string& id) {
  Stmt s(db_, "SELECT id, status, created_at, object_json, owner FROM batches WHERE id = ?1");
  if (s.prepared() != SQLITE_OK) return error(s.prepared(), "preparing a batch read");
  s.text(1, id);
  auto all = read_batches(s, path_);
  if (!all) return Unexpected(all.error());
  if (all->empty()) return std::optional<StoredBatch>();
  return std::optional<StoredBatch>(std::move(all->front()));
}

Result<std::vector<StoredBatch>> SqliteFileStore::list_batches(const std::string& owner, size_t limit, int64_t before) {
  IF_RETURN_IF_ERROR(file_rows::check_list_limit(limit, "batches"));
  Stmt s(db_,
         "SELECT id, status, created_at, object_json, owner FROM batches WHERE owner = ?3 AND "
         "(?1 = 0 OR created_at < ?1) ORDER BY created_at DESC, id DESC LIMIT ?2");
  if (s.prepared() != SQLITE_OK) return error(s.prepared(), "preparing the batch list");
  s.integer(1, before);
  s.integer(2, static_cast<int64_t>(limit));
  s.text(3, owner);
  return read_batches(s, path_);
}

Result<std::vector<StoredBatch>> SqliteFileStore::load_unfinished_batches() {
  const std::string sql = std::string("SELECT id, status, created_at, object_json, owner FROM batches WHERE ") +
                          file_rows::unfinished_where() + " ORDER BY created_at, id";
  Stmt s(db_, sql.c_str());
  if (s.prepared() != SQLITE_OK) return error(s.prepared(), "preparing the unfinished batches");
  return read_batches(s, path_);
}

Result<std::vector<StoredBatchLine>> SqliteFileStore::batch_lines(const std::string& batch_id) {
  Stmt s(db_,
         "SELECT batch_id, line, state, custom_id, job_id, body, result FROM batch_lines WHERE batch_id = ?1 "
         "ORDER BY line");
  if (s.prepared() != SQLITE_OK) return error(s.prepared(), "preparing a batch's lines");
  s.text(1, batch_id);
  std::vector<StoredBatchLine> out;
  for (int rc = s.step();; rc = s.step()) {
    if (rc == SQLITE_DONE) break;
    if (rc != SQLITE_ROW) return error(rc, "reading the lines of batch " + batch_id);
    StoredBatchLine l;
    l.batch_id = s.column_text(0);
    const int64_t line = s.column_int(1);
    l.state = s.column_text(2);
    l.custom_id = s.column_text(3);
    l.job_id = s.column_text(4);
    l.body = s.column_text(5);
    l.result = s.column_text(6);
    IF_RETURN_IF_ERROR(file_rows::check_line_row(l, line, label()));
    out.push_back(std::move(l));
  }
  return out;
}

}  // namespace idlefleet::store
