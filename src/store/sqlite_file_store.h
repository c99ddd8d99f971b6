// SqliteFileStore: the FileStore (store/file_store.h) in one SQLite file, WAL
// journal. The default, for a coordinator on one machine.
//
// Thread-safety: none (store/file_store.h); the connection is opened without
// SQLite's own mutex.
#pragma once

#include <memory>
#include <string>

#include "store/file_store.h"

struct sqlite3;

namespace idlefleet::store {

class SqliteFileStore final : public FileStore {
 public:
  // As FileStore::open for a path (or ":memory:").
  static Result<std::unique_ptr<SqliteFileStore>> open(const std::string& path);
  ~SqliteFileStore() override;

  Status put_file(const StoredFile& file, std::string_view content) override;
  Result<std::optional<StoredFile>> get_file(const std::string& id) override;
  Result<std::optional<std::string>> file_content(const std::string& id) override;
  Result<bool> delete_file(const std::string& id) override;
  Result<std::vector<StoredFile>> list_files(const std::string& owner, const std::string& purpose,
                                             size_t limit) override;
  Status put_batch(const StoredBatch& batch, std::span<const StoredBatchLine> lines) override;
  Result<std::optional<StoredBatch>> get_batch(const std::string& id) override;
  Result<std::vector<StoredBatch>> list_batches(const std::string& owner, size_t limit, int64_t before) override;
  Result<std::vector<StoredBatch>> load_unfinished_batches() override;
  Result<std::vector<StoredBatchLine>> batch_lines(const std::string& batch_id) override;
  const std::string& location() const override { return path_; }

 private:
  SqliteFileStore(std::string path, sqlite3* db);
  Status exec(const char* sql, const char* what);
  Unexpected error(int rc, const std::string& what) const;
  Status put_in_transaction(const StoredBatch& batch, std::span<const StoredBatchLine> lines);
  std::string label() const { return "file store '" + path_ + "'"; }

  std::string path_;
  sqlite3* db_ = nullptr;
};

}  // namespace idlefleet::store
