// FileStore: the Files and Batches APIs' state: uploaded and generated
// files, batches, and each batch line's progress, so that a coordinator
// restart loses no batch and runs no line twice. In SQLite
// (<data_dir>/files.db) by default, or in PostgreSQL when opened on a
// postgresql:// URL.
//
// Tables (schema in sqlite_file_store.cc and pg_file_store.cc; migrations as
// sqlite_db.h and pg_db.h describe, PostgreSQL's recorded as store "files").
// SQLite type / PostgreSQL type where it differs:
//   files(id TEXT/BYTEA PK, purpose TEXT/BYTEA, filename TEXT/BYTEA,
//     bytes INTEGER/BIGINT, created_at INTEGER/BIGINT, content BLOB/BYTEA,
//     owner TEXT/BYTEA)
//   batches(id TEXT/BYTEA PK, status TEXT/BYTEA, created_at INTEGER/BIGINT,
//     object_json TEXT/BYTEA, owner TEXT/BYTEA) the API's batch object,
//     opaque here
//     owner: the id of the API key that made it ("" when keys are off); the
//     server shows a key only its own files and batches.
//   batch_lines(batch_id TEXT/BYTEA, line INTEGER/BIGINT, state TEXT,
//     custom_id, job_id, body, result TEXT/BYTEA; PK (batch_id, line))
//     state: pending (valid, not yet run), running (job_id set), done and
//     failed (result: the output or error file line), cancelled (never ran).
// The store checks no id's shape, only its size, so every text but a line's
// state is BYTEA in PostgreSQL: both stores keep any bytes (PostgreSQL's TEXT
// refuses NUL and text that is not UTF-8), and sort ids bytewise.
// Everything is bounded before it is written (kOutOfRange naming the field)
// and checked when read back (kCorrupt naming the row).
//
// Thread-safety: none; one thread at a time (as JobStore).
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "common/result.h"

namespace idlefleet::store {

inline constexpr uint64_t kStoredFileBytesMax = uint64_t{512} << 20;
inline constexpr size_t kStoredIdBytesMax = 128;
inline constexpr size_t kStoredTextBytesMax = 4u << 20;  // a batch object, a line's body or result
inline constexpr size_t kListFilesMax = 10000;

struct StoredFile {
  std::string id;
  std::string purpose;
  std::string filename;
  uint64_t bytes = 0;
  int64_t created_at = 0;  // seconds since the epoch
  std::string owner;
  bool operator==(const StoredFile&) const = default;
};

struct StoredBatch {
  std::string id;
  std::string status;
  int64_t created_at = 0;
  std::string object_json;
  std::string owner;
  bool operator==(const StoredBatch&) const = default;
};

struct StoredBatchLine {
  std::string batch_id;
  uint64_t line = 0;
  std::string state;  // pending, running, done, failed, cancelled
  std::string custom_id;
  std::string job_id;
  std::string body;
  std::string result;
  bool operator==(const StoredBatchLine&) const = default;
};

// The file store's interface; SqliteFileStore (store/sqlite_file_store.h)
// and PgFileStore (store/pg_file_store.h) implement it with the same
// behaviour, and the same tests run against both.
class FileStore {
 public:
  // As JobStore::open: a postgresql:// URL or a SQLite file (":memory:" for
  // tests), created and migrated.
  static Result<std::unique_ptr<FileStore>> open(const std::string& location);
  virtual ~FileStore() = default;

  // Stores a new file. kAlreadyExists for an id already stored;
  // kInvalidArgument for an empty id or a size that is not the content's;
  // kOutOfRange for a field over its bound.
  virtual Status put_file(const StoredFile& file, std::string_view content) = 0;
  virtual Result<std::optional<StoredFile>> get_file(const std::string& id) = 0;
  virtual Result<std::optional<std::string>> file_content(const std::string& id) = 0;
  // True when there was such a file.
  virtual Result<bool> delete_file(const std::string& id) = 0;
  // One owner's files, newest first; purpose "" for all. REQUIRES: limit <= kListFilesMax.
  virtual Result<std::vector<StoredFile>> list_files(const std::string& owner, const std::string& purpose,
                                                     size_t limit) = 0;

  // A batch and any number of its lines, in one transaction.
  virtual Status put_batch(const StoredBatch& batch, std::span<const StoredBatchLine> lines) = 0;
  virtual Result<std::optional<StoredBatch>> get_batch(const std::string& id) = 0;
  // One owner's batches, newest first, at most `limit`, created before `before` (0: no bound).
  virtual Result<std::vector<StoredBatch>> list_batches(const std::string& owner, size_t limit, int64_t before) = 0;
  // Batches whose status is not final, oldest first.
  virtual Result<std::vector<StoredBatch>> load_unfinished_batches() = 0;
  // A batch's lines in order.
  virtual Result<std::vector<StoredBatchLine>> batch_lines(const std::string& batch_id) = 0;

  // What the store was opened on: the path as given to open(), or the URL
  // without its password.
  virtual const std::string& location() const = 0;

 protected:
  FileStore() = default;
  FileStore(const FileStore&) = delete;
  FileStore& operator=(const FileStore&) = delete;
};

// What both implementations share (store/file_store.cc).
namespace file_rows {

// The SQL condition that selects unfinished batches (`status NOT IN (...)`).
const char* unfinished_where();
// put_file's checks (kOutOfRange, kInvalidArgument).
Status check_file(const StoredFile& file, std::string_view content);
// A files row read back, its other fields already in `file` (kCorrupt
// naming the file, in the store `label`).
Status check_file_row(StoredFile& file, int64_t bytes, const std::string& label);
// file_content's check that the content is the size recorded.
Status check_content(const std::string& id, size_t content_bytes, int64_t bytes, const std::string& label);
// list_files' and list_batches' bound (kOutOfRange).
Status check_list_limit(size_t limit, const char* what);
// put_batch's checks of the batch and its lines (kOutOfRange, kInvalidArgument).
Status check_batch(const StoredBatch& batch, std::span<const StoredBatchLine> lines);
// A batches row read back (kCorrupt).
Status check_batch_row(const StoredBatch& batch, const std::string& label);
// A batch_lines row read back, its other fields already in `line` (kCorrupt
// naming the batch, line and state).
Status check_line_row(StoredBatchLine& line, int64_t number, const std::string& label);

}  // namespace file_rows

}  // namespace idlefleet::store
