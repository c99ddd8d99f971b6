#include "store/file_store.h"

#include <sqlite3.h>

#include <algorithm>
#include <array>

#include "store/sqlite_db.h"

namespace idlefleet::store {
namespace {

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

constexpr const char* kFinalBatchStatuses = "('failed', 'completed', 'expired', 'cancelled')";
constexpr std::array<std::string_view, 5> kLineStates = {"pending", "running", "done", "failed", "cancelled"};

using Stmt = Statement;

Status check_size(std::string_view what, size_t size, size_t max) {
  if (size > max) {
    return Unexpected(ErrorCode::kOutOfRange,
                      std::string(what) + " is " + std::to_string(size) + " bytes, over " + std::to_string(max));
  }
  return {};
}

}  // namespace

FileStore::FileStore(std::string path, sqlite3* db) : path_(std::move(path)), db_(db) {}
FileStore::~FileStore() { sqlite3_close_v2(db_); }

Unexpected FileStore::error(int rc, const std::string& what) const {
  return sqlite_error(db_, rc, "file store '" + path_ + "'", what);
}

Status FileStore::exec(const char* sql, const char* what) { return sqlite_exec(db_, sql, "file store '" + path_ + "'", what); }

Result<std::unique_ptr<FileStore>> FileStore::open(const std::string& path) {
  sqlite3* db = nullptr;
  IF_RETURN_IF_ERROR(open_database(path, kMigrations, "file store '" + path + "'", &db));
  return std::unique_ptr<FileStore>(new FileStore(path, db));
}

Status FileStore::put_file(const StoredFile& f, std::string_view content) {
  IF_RETURN_IF_ERROR(check_size("a file id", f.id.size(), kStoredIdBytesMax));
  IF_RETURN_IF_ERROR(check_size("a file's purpose", f.purpose.size(), kStoredIdBytesMax));
  IF_RETURN_IF_ERROR(check_size("a file name", f.filename.size(), 1024));
  IF_RETURN_IF_ERROR(check_size("file " + f.id, content.size(), kStoredFileBytesMax));
  if (f.id.empty() || f.bytes != content.size()) {
    return Unexpected(ErrorCode::kInvalidArgument, "file '" + f.id + "': empty id or a size that is not its content's");
  }
  IF_RETURN_IF_ERROR(check_size("a file's owner", f.owner.size(), kStoredIdBytesMax));
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
  if (int rc = s.step(); rc != SQLITE_DONE) return error(rc, "writing file " + f.id);
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
  if (bytes < 0 || static_cast<uint64_t>(bytes) > kStoredFileBytesMax || f.id.empty()) {
    return Unexpected(ErrorCode::kCorrupt, "file store '" + path + "': file '" + f.id + "' has a bad size or id");
  }
  f.bytes = static_cast<uint64_t>(bytes);
  return f;
}
}  // namespace

Result<std::optional<StoredFile>> FileStore::get_file(const std::string& id) {
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

Result<std::optional<std::string>> FileStore::file_content(const std::string& id) {
  Stmt s(db_, "SELECT content, bytes FROM files WHERE id = ?1");
  if (s.prepared() != SQLITE_OK) return error(s.prepared(), "preparing a file read");
  s.text(1, id);
  const int rc = s.step();
  if (rc == SQLITE_DONE) return std::optional<std::string>();
  if (rc != SQLITE_ROW) return error(rc, "reading file " + id);
  std::string content = s.column_text(0);
  if (static_cast<int64_t>(content.size()) != s.column_int(1)) {
    return Unexpected(ErrorCode::kCorrupt, "file store '" + path_ + "': file '" + id + "' is not the size recorded");
  }
  return std::optional<std::string>(std::move(content));
}

Result<bool> FileStore::delete_file(const std::string& id) {
  Stmt s(db_, "DELETE FROM files WHERE id = ?1");
  if (s.prepared() != SQLITE_OK) return error(s.prepared(), "preparing a file delete");
  s.text(1, id);
  if (int rc = s.step(); rc != SQLITE_DONE) return error(rc, "deleting file " + id);
  return sqlite3_changes(db_) > 0;
}

Result<std::vector<StoredFile>> FileStore::list_files(const std::string& owner, const std::string& purpose,
                                                     size_t limit) {
  if (limit > kListFilesMax) return Unexpected(ErrorCode::kOutOfRange, "at most 10000 files are listed at once");
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

Status FileStore::put_batch(const StoredBatch& b, std::span<const StoredBatchLine> lines) {
  IF_RETURN_IF_ERROR(check_size("a batch id", b.id.size(), kStoredIdBytesMax));
  IF_RETURN_IF_ERROR(check_size("batch " + b.id, b.object_json.size(), kStoredTextBytesMax));
  IF_RETURN_IF_ERROR(check_size("a batch's owner", b.owner.size(), kStoredIdBytesMax));
  if (b.id.empty()) return Unexpected(ErrorCode::kInvalidArgument, "a batch needs an id");
  for (const StoredBatchLine& l : lines) {
    if (l.batch_id != b.id || l.line == 0) {
      return Unexpected(ErrorCode::kInvalidArgument, "batch " + b.id + ": a line of another batch, or line 0");
    }
    if (std::find(kLineStates.begin(), kLineStates.end(), l.state) == kLineStates.end()) {
      return Unexpected(ErrorCode::kInvalidArgument, "batch " + b.id + ": unknown line state '" + l.state + "'");
    }
    IF_RETURN_IF_ERROR(check_size("a custom_id", l.custom_id.size(), kStoredIdBytesMax * 8));
    IF_RETURN_IF_ERROR(check_size("a job id", l.job_id.size(), kStoredIdBytesMax));
    IF_RETURN_IF_ERROR(check_size("a batch line's body", l.body.size(), kStoredTextBytesMax));
    IF_RETURN_IF_ERROR(check_size("a batch line's result", l.result.size(), kStoredTextBytesMax));
  }
  IF_RETURN_IF_ERROR(exec("BEGIN IMMEDIATE", "starting a batch write"));
  Status st = put_in_transaction(b, lines);
  if (!st) {
    sqlite3_exec(db_, "ROLLBACK", nullptr, nullptr, nullptr);
    return st;
  }
  return exec("COMMIT", "committing a batch write");
}

Status FileStore::put_in_transaction(const StoredBatch& b, std::span<const StoredBatchLine> lines) {
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
    if (out.back().id.empty()) return Unexpected(ErrorCode::kCorrupt, "file store '" + path + "': a batch without an id");
  }
  return out;
}
}  // namespace

Result<std::optional<StoredBatch>> FileStore::get_batch(const std::string& id) {
  Stmt s(db_, "SELECT id, status, created_at, object_json, owner FROM batches WHERE id = ?1");
  if (s.prepared() != SQLITE_OK) return error(s.prepared(), "preparing a batch read");
  s.text(1, id);
  auto all = read_batches(s, path_);
  if (!all) return Unexpected(all.error());
  if (all->empty()) return std::optional<StoredBatch>();
  return std::optional<StoredBatch>(std::move(all->front()));
}

Result<std::vector<StoredBatch>> FileStore::list_batches(const std::string& owner, size_t limit, int64_t before) {
  if (limit > kListFilesMax) return Unexpected(ErrorCode::kOutOfRange, "at most 10000 batches are listed at once");
  Stmt s(db_,
         "SELECT id, status, created_at, object_json, owner FROM batches WHERE owner = ?3 AND "
         "(?1 = 0 OR created_at < ?1) ORDER BY created_at DESC, id DESC LIMIT ?2");
  if (s.prepared() != SQLITE_OK) return error(s.prepared(), "preparing the batch list");
  s.integer(1, before);
  s.integer(2, static_cast<int64_t>(limit));
  s.text(3, owner);
  return read_batches(s, path_);
}

Result<std::vector<StoredBatch>> FileStore::load_unfinished_batches() {
  const std::string sql = std::string("SELECT id, status, created_at, object_json, owner FROM batches WHERE status NOT IN ")
                              .append(kFinalBatchStatuses)
                              .append(" ORDER BY created_at, id");
  Stmt s(db_, sql.c_str());
  if (s.prepared() != SQLITE_OK) return error(s.prepared(), "preparing the unfinished batches");
  return read_batches(s, path_);
}

Result<std::vector<StoredBatchLine>> FileStore::batch_lines(const std::string& batch_id) {
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
    if (line < 1 || std::find(kLineStates.begin(), kLineStates.end(), l.state) == kLineStates.end()) {
      return Unexpected(ErrorCode::kCorrupt, "file store '" + path_ + "': batch " + batch_id + " has a bad line " +
                                                 std::to_string(line) + " (state '" + l.state.substr(0, 32) + "')");
    }
    l.line = static_cast<uint64_t>(line);
    out.push_back(std::move(l));
  }
  return out;
}

}  // namespace idlefleet::store
