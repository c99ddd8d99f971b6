// PgFileStore: the FileStore (store/file_store.h) in PostgreSQL, for
// coordinators that share one database. Same behaviour, limits and errors as
// the SQLite store; the schema, with the types that differ, is in
// store/file_store.h.
//
// Thread-safety: none (store/file_store.h): one connection, one thread at a
// time.
#pragma once

#include <memory>
#include <string>

#include "store/file_store.h"
#include "store/pg_db.h"

namespace idlefleet::store {

// The schema this build writes (migrations recorded as store "files").
inline constexpr int kPgFilesSchemaVersion = 1;

class PgFileStore final : public FileStore {
 public:
  // Connects to `url` (postgresql://...) and migrates the file tables.
  static Result<std::unique_ptr<PgFileStore>> open(const std::string& url);

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
  const std::string& location() const override { return location_; }

 private:
  PgFileStore(std::unique_ptr<PgConnection> db, std::string location)
      : db_(std::move(db)), location_(std::move(location)) {}
  Result<std::vector<StoredFile>> read_files(const std::string& sql, const PgParams& params, const std::string& what);
  Result<std::vector<StoredBatch>> read_batches(const std::string& sql, const PgParams& params,
                                                const std::string& what);
  Status put_in_transaction(const StoredBatch& batch, std::span<const StoredBatchLine> lines);

  std::unique_ptr<PgConnection> db_;
  std::string location_;  // the URL without its password
};

}  // namespace idlefleet::store
