// JobStore: the coordinator's jobs on disk, in SQLite, so that a restart
// loses no accepted job and no produced token.
//
// The coordinator keeps its jobs in memory and writes the changed ones in
// batches (put(): one transaction per batch, so a batch is all or nothing).
// On start it reads back every job that is not finished (load_unfinished())
// and resumes them. Fields the store does not interpret (the client's request,
// sampling parameters, the attempt history) are opaque JSON text.
//
// Durability: WAL journal with synchronous=NORMAL. A committed batch survives
// a process crash; a power loss may drop the last batches, never corrupt the
// file. For jobs that is the right trade: a lost batch means tokens produced
// again, not money lost (the ledger will use synchronous=FULL).
//
// Schema: a `schema_version` table holds one row per migration applied.
// open() applies the missing numbered migrations in one transaction and
// refuses a file written by a newer build (kUnsupported).
//
// The `jobs` row, column by column:
//   id TEXT PRIMARY KEY (1..kIdBytesMax bytes) | kind TEXT ("completion",
//   "chat" or "embedding") | model_id TEXT | request_json TEXT | prompt_ids BLOB |
//   max_tokens INTEGER | stop_ids BLOB | sampling_json TEXT |
//   batch INTEGER (0 or 1) | state TEXT (a core::job_state_name()) |
//   produced BLOB | finish_reason TEXT | attempts_json TEXT |
//   created_at INTEGER (TimeMs) | updated_at INTEGER (TimeMs)
//   A token BLOB is count x int32, little-endian, no header: its length is a
//   multiple of 4 bytes (checked on read, kCorrupt naming the job otherwise);
//   an empty array is a zero-length BLOB, never NULL.
//
// Every put() is validated against the limits below before anything is
// written; every row read is validated before it is returned (a hand-edited
// or damaged file gives kCorrupt naming the job, never a crash).
//
// Thread-safety: none. One JobStore is used from one thread at a time (the
// connection is opened without SQLite's own mutex); move it between threads
// only with external synchronisation. Separate processes may open the same
// file: writers wait up to kBusyTimeoutMs for each other.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "common/result.h"
#include "core/time.h"

struct sqlite3;
struct sqlite3_stmt;

namespace idlefleet::store {

// Limits on one stored job, checked by put() (kOutOfRange naming the job).
inline constexpr size_t kIdBytesMax = 128;
inline constexpr size_t kKindBytesMax = 32;
inline constexpr size_t kModelIdBytesMax = 128;
inline constexpr size_t kRequestJsonBytesMax = 4u << 20;
inline constexpr size_t kSamplingJsonBytesMax = 64u << 10;
inline constexpr size_t kAttemptsJsonBytesMax = 1u << 20;
inline constexpr size_t kFinishReasonBytesMax = 4u << 10;  // "failed" carries the why
inline constexpr size_t kTokensMax = 1u << 20;             // prompt_ids, stop_ids, produced each
inline constexpr uint64_t kMaxTokensMax = kTokensMax;      // the max_tokens field
// Jobs in one put(): the coordinator's whole queue fits in one batch.
inline constexpr size_t kPutJobsMax = 1u << 17;
// Rows one list_recent() may return.
inline constexpr size_t kListRecentJobsMax = 10000;
// Ids one done_job_ids() may return.
inline constexpr size_t kDoneIdsMax = 50'000'000;
// The schema this build writes; open() migrates older files up to it.
inline constexpr int kSchemaVersion = 2;

// One job as stored. Plain data: the coordinator converts to and from core::Job.
struct StoredJob {
  std::string id;
  std::string kind;            // "completion", "chat" or "embedding"
  std::string model_id;
  std::string request_json;    // the client's request as accepted (opaque here)
  std::vector<int32_t> prompt_ids;
  uint64_t max_tokens = 0;
  std::vector<int32_t> stop_ids;
  std::string sampling_json;   // opaque
  bool batch = false;
  std::string state;           // a job_state_name(): queued, assigned, running, preempted, done, failed, cancelled
  std::vector<int32_t> produced;
  std::string finish_reason;
  std::string attempts_json;   // opaque
  core::TimeMs created_at = 0, updated_at = 0;

  bool operator==(const StoredJob&) const = default;
};

class JobStore {
 public:
  // Opens (creating if absent) the database at `path` and migrates it to
  // kSchemaVersion. ":memory:" gives a private in-memory store (no WAL) for
  // tests. A file that is not SQLite, or is damaged, gives kCorrupt naming the
  // path; one the OS refuses gives kIo; one from a newer build kUnsupported.
  static Result<std::unique_ptr<JobStore>> open(const std::string& path);

  ~JobStore();
  JobStore(const JobStore&) = delete;
  JobStore& operator=(const JobStore&) = delete;

  // Inserts or replaces (by id) every job, in one transaction: all are
  // written or none. If an id appears twice, the later entry wins.
  // REQUIRES: jobs.size() <= kPutJobsMax (else kOutOfRange, nothing written).
  Status put(std::span<const StoredJob> jobs);

  // The job with this id, or nullopt.
  Result<std::optional<StoredJob>> get(const std::string& id);

  // Every job whose state is not final (not done, failed or cancelled),
  // oldest first: ordered by created_at, then id.
  Result<std::vector<StoredJob>> load_unfinished();

  // The `limit` newest jobs, newest first (created_at, then id, descending).
  // REQUIRES: limit <= kListRecentJobsMax (else kOutOfRange).
  Result<std::vector<StoredJob>> list_recent(size_t limit);

  // Jobs that finished done with updated_at >= since, oldest first, at most
  // `limit` (for the settlement sweep after a restart).
  // REQUIRES: limit <= kListRecentJobsMax (else kOutOfRange).
  Result<std::vector<StoredJob>> done_since(core::TimeMs since, size_t limit);

  // The ids of every job that finished done (for `idlefleet ledger verify`).
  // kOutOfRange beyond kDoneIdsMax.
  Result<std::vector<std::string>> done_job_ids();

  // Jobs per state. Every state name is present, zero included, so that a
  // gauge per state reads 0 rather than vanishing.
  Result<std::map<std::string, uint64_t>> count_by_state();

  // The file this store was opened on, as given to open().
  const std::string& path() const { return path_; }

 private:
  JobStore(std::string path, sqlite3* db);
  Status prepare_statements();
  Status exec(const char* sql, const char* what);
  Status put_in_transaction(std::span<const StoredJob> jobs);
  Result<std::vector<StoredJob>> read_all(sqlite3_stmt* stmt);
  // An Error for SQLite result code `rc` while doing `what`, naming the file.
  Unexpected sqlite_error(int rc, const std::string& what) const;

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
