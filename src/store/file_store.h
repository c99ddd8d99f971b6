// FileStore: the Files and Batches APIs' state on disk, in SQLite
// (<data_dir>/files.db): uploaded and generated files, batches, and each
// batch line's progress, so that a coordinator restart loses no batch and
// runs no line twice.
//
// Tables (schema in file_store.cc, migrations as sqlite_db.h describes):
//   files(id, purpose, filename, bytes, created_at, content BLOB, owner)
//   batches(id, status, created_at, object_json, owner) the API's batch object, opaque here
//     owner: the id of the API key that made it ("" when keys are off); the
//     server shows a key only its own files and batches.
//   batch_lines(batch_id, line, state, custom_id, job_id, body, result)
//     state: pending (valid, not yet run), running (job_id set), done and
//     failed (result: the output or error file line), cancelled (never ran).
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

struct sqlite3;
struct sqlite3_stmt;

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

class FileStore {
 public:
  // As JobStore::open: creates and migrates; ":memory:" for tests.
  static Result<std::unique_ptr<FileStore>> open(const std::string& path);
  ~FileStore();
  FileStore(const FileStore&) = delete;
  FileStore& operator=(const FileStore&) = delete;

  Status put_file(const StoredFile& file, std::string_view content);
  Result<std::optional<StoredFile>> get_file(const std::string& id);
  Result<std::optional<std::string>> file_content(const std::string& id);
  // True when there was such a file.
  Result<bool> delete_file(const std::string& id);
  // One owner's files, newest first; purpose "" for all. REQUIRES: limit <= kListFilesMax.
  Result<std::vector<StoredFile>> list_files(const std::string& owner, const std::string& purpose, size_t limit);

  // A batch and any number of its lines, in one transaction.
  Status put_batch(const StoredBatch& batch, std::span<const StoredBatchLine> lines);
  Result<std::optional<StoredBatch>> get_batch(const std::string& id);
  // One owner's batches, newest first, at most `limit`, created before `before` (0: no bound).
  Result<std::vector<StoredBatch>> list_batches(const std::string& owner, size_t limit, int64_t before);
  // Batches whose status is not final, oldest first.
  Result<std::vector<StoredBatch>> load_unfinished_batches();
  // A batch's lines in order.
  Result<std::vector<StoredBatchLine>> batch_lines(const std::string& batch_id);

 private:
  FileStore(std::string path, sqlite3* db);
  Status exec(const char* sql, const char* what);
  Unexpected error(int rc, const std::string& what) const;
  Status put_in_transaction(const StoredBatch& batch, std::span<const StoredBatchLine> lines);

  std::string path_;
  sqlite3* db_ = nullptr;
};

}  // namespace idlefleet::store
