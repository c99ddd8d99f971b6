// PgJobStore: the JobStore (store/job_store.h) in PostgreSQL, for
// coordinators that share one database (docs/operations.md). Same behaviour,
// limits and errors as the SQLite store. The id, kind and state (checked to be
// printable ASCII) are TEXT, ids sorting bytewise (COLLATE "C") as in SQLite;
// every free-form field is BYTEA, so that any bytes SQLite would keep (a NUL,
// text that is not UTF-8) are kept here too rather than refused by the server.
//
// Thread-safety: none (store/job_store.h): one connection, one thread at a time.
#pragma once

#include <memory>
#include <string>

#include "store/job_store.h"
#include "store/pg_db.h"

namespace idlefleet::store {

// The schema this build writes (migrations recorded as store "jobs").
inline constexpr int kPgJobsSchemaVersion = 1;

class PgJobStore final : public JobStore {
 public:
  // Connects to `url` (postgresql://...) and migrates the jobs tables.
  static Result<std::unique_ptr<PgJobStore>> open(const std::string& url);

  Status put(std::span<const StoredJob> jobs) override;
  Result<std::optional<StoredJob>> get(const std::string& id) override;
  Result<std::vector<StoredJob>> load_unfinished() override;
  Result<std::vector<StoredJob>> list_recent(size_t limit) override;
  Result<std::vector<StoredJob>> done_since(core::TimeMs since, size_t limit) override;
  Result<std::vector<std::string>> done_job_ids() override;
  Result<std::map<std::string, uint64_t>> count_by_state() override;
  const std::string& location() const override { return location_; }

 private:
  PgJobStore(std::unique_ptr<PgConnection> db, std::string location)
      : db_(std::move(db)), location_(std::move(location)) {}
  Status put_in_transaction(std::span<const StoredJob> jobs);
  Result<std::vector<StoredJob>> read_jobs(const std::string& sql, const PgParams& params, const std::string& what);

  std::unique_ptr<PgConnection> db_;
  std::string location_;  // the URL without its password
};

}  // namespace idlefleet::store
