// JobStore: the coordinator's jobs on disk, so that a restart loses no
// accepted job and no produced token. In SQLite by default (one machine), or
// in PostgreSQL when the coordinator's `store` setting is a postgresql:// URL.
//
// The coordinator keeps its jobs in memory and writes the changed ones in
// batches (put(): one transaction per batch, so a batch is all or nothing).
// On start it reads back every job that is not finished (load_unfinished())
// and resumes them. Fields the store does not interpret (the client's request,
// sampling parameters, the attempt history) are opaque JSON text.
//
// Durability: SQLite with a WAL journal and synchronous=NORMAL: a committed
// batch survives a process crash; a power loss may drop the last batches,
// never corrupt the file. For jobs that is the right trade: a lost batch means
// tokens produced again, not money lost (the ledger uses synchronous=FULL).
// PostgreSQL: the job store's connection commits with synchronous_commit =
// off: a coordinator crash loses nothing, a database server crash may lose the
// last fraction of a second of batches (the other stores keep it on).
//
// Schema: numbered migrations, applied in one transaction by open(), which
// refuses a database written by a newer build (kUnsupported). SQLite records
// them in `schema_version`, PostgreSQL in `idlefleet_schema` (store "jobs").
//
// The `jobs` row, column by column (SQLite type / PostgreSQL type where it
// differs):
//   id TEXT PRIMARY KEY (1..kIdBytesMax bytes of printable ASCII) |
//   kind TEXT ("completion", "chat" or "embedding") | model_id TEXT/BYTEA |
//   request_json TEXT/BYTEA | prompt_ids BLOB/BYTEA | max_tokens INTEGER/BIGINT |
//   stop_ids BLOB/BYTEA | sampling_json TEXT/BYTEA | batch INTEGER (0 or 1)/BOOLEAN |
//   state TEXT (a core::job_state_name()) | produced BLOB/BYTEA |
//   finish_reason TEXT/BYTEA | attempts_json TEXT/BYTEA |
//   created_at INTEGER/BIGINT (TimeMs) | updated_at INTEGER/BIGINT (TimeMs)
//   A token array is count x int32, little-endian, no header: its length is a
//   multiple of 4 bytes (checked on read, kCorrupt naming the job otherwise);
//   an empty array is zero bytes, never NULL. The free-form fields are BYTEA
//   in PostgreSQL so that both stores keep any bytes (PostgreSQL's TEXT
//   refuses NUL and text that is not UTF-8).
//
// Every put() is validated against the limits below before anything is
// written; every row read is validated before it is returned (a hand-edited
// or damaged database gives kCorrupt naming the job, never a crash).
//
// Thread-safety: none. One JobStore is used from one thread at a time; move
// it between threads only with external synchronisation. Separate processes
// may open the same database: SQLite writers wait up to kBusyTimeoutMs for
// each other.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "common/result.h"
#include "core/time.h"

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

// The job store's interface; SqliteJobStore (store/sqlite_job_store.h) and
// PgJobStore (store/pg_job_store.h) implement it with the same behaviour, and
// the same tests run against both.
class JobStore {
 public:
  // Opens the store at `location`: a postgresql:// URL (store/pg_db.h) or a
  // SQLite file, created if absent, migrated to the current schema either way.
  // ":memory:" gives a private in-memory SQLite store for tests. A file that
  // is not SQLite, or is damaged, gives kCorrupt naming the path; one the OS
  // refuses kIo; a database from a newer build kUnsupported; a server that
  // cannot be reached kIo.
  static Result<std::unique_ptr<JobStore>> open(const std::string& location);

  virtual ~JobStore() = default;

  // Inserts or replaces (by id) every job, in one transaction: all are
  // written or none. If an id appears twice, the later entry wins.
  // REQUIRES: jobs.size() <= kPutJobsMax (else kOutOfRange, nothing written).
  virtual Status put(std::span<const StoredJob> jobs) = 0;

  // The job with this id, or nullopt.
  virtual Result<std::optional<StoredJob>> get(const std::string& id) = 0;

  // Every job whose state is not final (not done, failed or cancelled),
  // oldest first: ordered by created_at, then id.
  virtual Result<std::vector<StoredJob>> load_unfinished() = 0;

  // The `limit` newest jobs, newest first (created_at, then id, descending).
  // REQUIRES: limit <= kListRecentJobsMax (else kOutOfRange).
  virtual Result<std::vector<StoredJob>> list_recent(size_t limit) = 0;

  // Jobs that finished done with updated_at >= since, oldest first, at most
  // `limit` (for the settlement sweep after a restart).
  // REQUIRES: limit <= kListRecentJobsMax (else kOutOfRange).
  virtual Result<std::vector<StoredJob>> done_since(core::TimeMs since, size_t limit) = 0;

  // The ids of every job that finished done (for `idlefleet ledger verify`),
  // ordered by id. kOutOfRange beyond kDoneIdsMax.
  virtual Result<std::vector<std::string>> done_job_ids() = 0;

  // Jobs per state. Every state name is present, zero included, so that a
  // gauge per state reads 0 rather than vanishing.
  virtual Result<std::map<std::string, uint64_t>> count_by_state() = 0;

  // What the store was opened on: the path as given to open(), or the URL
  // without its password.
  virtual const std::string& location() const = 0;

 protected:
  JobStore() = default;
  JobStore(const JobStore&) = delete;
  JobStore& operator=(const JobStore&) = delete;
};

// What both implementations share (store/job_store.cc).
namespace job_rows {

// Every job state, and whether a name is one of them.
std::span<const std::string_view> state_names();
bool known_state(std::string_view name);
// The SQL condition that selects unfinished jobs (`state NOT IN (...)`).
const char* unfinished_where();
// CHECKs that the final states in unfinished_where() are core's: otherwise
// recovery would skip live jobs or resurrect finished ones.
void check_final_states_match_core();
// Every limit above, and a known kind and state (kOutOfRange or
// kInvalidArgument naming the job and the field).
Status validate(const StoredJob& job);
// kOutOfRange when a put of `count` jobs is too many, or a list limit too high.
Status check_put_count(size_t count, const std::string& label);
Status check_list_limit(size_t limit, const char* call, const std::string& label);
// Token arrays as stored: count x int32 little-endian.
std::string encode_tokens(std::span<const int32_t> ids);
// Decodes a stored token array into `out` (kCorrupt naming the job and column
// when its length is not a multiple of 4 or beyond kTokensMax).
Status decode_tokens(const StoredJob& job, const char* column, std::string_view bytes, std::vector<int32_t>& out);
// Checks and sets the fields read back as integers and the state (kCorrupt
// naming the job and column).
Status finish_read(StoredJob& job, int64_t max_tokens, int64_t batch);
// Every state at 0: count_by_state()'s starting point.
std::map<std::string, uint64_t> zero_counts();

}  // namespace job_rows

}  // namespace idlefleet::store
