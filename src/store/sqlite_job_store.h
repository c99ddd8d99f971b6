// SqliteJobStore: the JobStore (store/job_store.h) in one SQLite file, WAL
// journal, synchronous=NORMAL. The default, for a coordinator on one machine.
//
// Thread-safety: none (store/job_store.h); the connection is opened without
// SQLite's own mutex.
#pragma once

#include <memory>
#include <string>

#include "store/job_store.h"

struct sqlite3;
struct sqlite3_stmt;

namespace idlefleet::store {

class SqliteJobStore final : public JobStore {
 public:
  // As JobStore::open for a path (or ":memory:").
  static Result<std::unique_ptr<SqliteJobStore>> open(const std::string& path);
  ~SqliteJobStore() override;

  Status put(std::span<const StoredJob> jobs) override;
  Result<std::optional<StoredJob>> get(const std::string& id) override;
  Result<std::vector<StoredJob>> load_unfinished() override;
  Result<std::vector<StoredJob>> list_recent(size_t limit) override;
  Result<std::vector<StoredJob>> done_since(core::TimeMs since, size_t limit) override;
  Result<std::vector<std::string>> done_job_ids() override;
  Result<std::map<std::string, uint64_t>> count_by_state() override;
  const std::string& location() const override { return path_; }

 private:
  SqliteJobStore(std::string path, sqlite3* db);
  Status prepare_statements();
  Status exec(const char* sql, const char* what);
  Status put_in_transaction(std::span<const StoredJob> jobs);
  Result<std::vector<StoredJob>> read_all(sqlite3_stmt* stmt);
  // An Error for SQLite result code `rc` while doing `what`, naming the file.
  Unexpected sqlite_error(int rc, const std::string& what) const;
  std::string label() const { return "job store '" + path_ + "'"; }

  std::string path_;
  sqlite3* db_ = nullptr;
  sqlite3_stmt* upsert_ = nullptr;
  sqlite3_stmt* get_ = nullptr;
  sqlite3_stmt* unfinished_ = nullptr;
  sqlite3_stmt* recent_ = nullptr;
  sqlite3_stmt* done_since_ = nullptr;
  sqlite3_stmt* count_ = nullptr;
};

}  // namespace idlefleet::store
