// VehicleStore: each vehicle's Ed25519 public key (what its receipts are
// checked against), the receipts the coordinator accepted, owners, enrolment
// codes, owner policies and verification standings. In SQLite
// (`<data_dir>/vehicles.sqlite3`) by default, or in PostgreSQL when opened on
// a postgresql:// URL.
//
// A key is pinned the first time a vehicle presents one (put_vehicle) and
// never silently replaced: a vehicle that comes back with another key is
// refused until an operator removes the old one. Receipts are keyed by
// (job, attempt), so a replayed receipt is refused by the store itself
// (put_receipt returns false), across restarts too. The settlement of a job
// reads its receipts back (receipts_for_job).
//
// Durability: SQLite with WAL, synchronous=FULL: receipts are what owners are
// paid by. PostgreSQL: a committed write is as durable as the server is
// configured.
//
// Schema: numbered migrations, applied by open(), which refuses a database
// written by a newer build (kUnsupported). SQLite records them in
// `schema_version` (sqlite_db.h), PostgreSQL in `idlefleet_schema` (store
// "vehicles", one migration: the whole schema below). Column by column (SQLite
// type / PostgreSQL type where it differs; PostgreSQL's TEXT columns are
// COLLATE "C", so that they sort bytewise as SQLite's do):
//   vehicles: vehicle_id TEXT PK | public_key TEXT (64 hex) | owner_id
//     TEXT/BYTEA ("" until enrolled to an owner) | pinned_at INTEGER/BIGINT
//     (TimeMs)
//   receipts: job_id TEXT/BYTEA | attempt INTEGER/BIGINT | vehicle_id
//     TEXT/BYTEA | owner_id TEXT/BYTEA | receipt_json TEXT/BYTEA (the message
//     as received, signature included) | accepted_at INTEGER/BIGINT;
//     PRIMARY KEY (job_id, attempt)
//   owners (SQLite migration 2): id TEXT PK | name TEXT/BYTEA | token_sha256
//     BLOB/BYTEA UNIQUE | created_at INTEGER/BIGINT
//   enrolment_codes (SQLite migration 2): code_sha256 BLOB/BYTEA PK | owner_id
//     TEXT/BYTEA | created_at, expires_at INTEGER/BIGINT | used_by TEXT (""
//     unused) | used_at INTEGER/BIGINT
//   vehicle_policies (SQLite migration 3): vehicle_id TEXT PK | policy_json
//     TEXT/BYTEA (core::encode_policy) | updated_at INTEGER/BIGINT: the policy
//     the vehicle's owner set (owner API), sent to the vehicle on its every
//     hello
//   standings (SQLite migration 4): vehicle_id TEXT PK | standing
//     INTEGER/BIGINT (0..1000) | checks_agreed, checks_faulted,
//     agreed_since_fault INTEGER/BIGINT | quarantined INTEGER (0/1)/BOOLEAN |
//     quarantine_reason TEXT/BYTEA | quarantined_at INTEGER/BIGINT |
//     updated_at INTEGER/BIGINT: verification (core/verification.h)
// The columns the store does not validate as identifiers (owner ids, a
// receipt's job and vehicle, names, JSON, reasons) are BYTEA in PostgreSQL,
// so that both stores keep any bytes (PostgreSQL's TEXT refuses NUL and text
// that is not UTF-8). Every row read is validated (kCorrupt naming the row,
// never a crash).
//
// Thread-safety: none: one thread at a time (the coordinator's loop thread).
// Separate processes may open the same database (`idlefleet admin owners`
// while the coordinator runs).
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "common/result.h"
#include "core/protocol.h"
#include "core/time.h"
#include "core/verification.h"

namespace idlefleet::store {

inline constexpr size_t kVehiclesMax = 10'000'000;
inline constexpr size_t kReceiptsPerJobMax = 1024;  // attempts_total_max is 256
inline constexpr size_t kReceiptKeysMax = 100'000'000;

struct VehicleRecord {
  std::string vehicle_id;
  std::string public_key;  // 64 lower-case hex digits
  std::string owner_id;    // "" until enrolled
  core::TimeMs pinned_at = 0;

  bool operator==(const VehicleRecord&) const = default;
};

// An owner account: vehicles are enrolled to it and its statements are paid
// to it. The token (shown once) is kept as its SHA-256.
struct Owner {
  std::string id;    // "own_" + 16 hex digits: a ledger id (owner:<id>)
  std::string name;
  core::TimeMs created_at = 0;
};
inline constexpr std::string_view kOwnerTokenPrefix = "ow-idf-";
inline constexpr size_t kOwnerNameBytesMax = 128;
inline constexpr size_t kOwnersMax = 1'000'000;
inline constexpr std::string_view kEnrolmentCodePrefix = "enr-";
inline constexpr core::DurationMs kEnrolmentCodeTtlMs = 24 * core::kHourMs;
inline constexpr size_t kOpenCodesPerOwnerMax = 1000;

// The policy an owner set for a vehicle, and when.
struct StoredPolicy {
  core::OwnerPolicy policy;
  core::TimeMs updated_at = 0;
};

struct StoredReceipt {
  core::ReceiptMessage receipt;
  std::string owner_id;
  core::TimeMs accepted_at = 0;
};

// The vehicle store's interface; SqliteVehicleStore
// (store/sqlite_vehicle_store.h) and PgVehicleStore (store/pg_vehicle_store.h)
// implement it with the same behaviour, and the same tests run against both.
class VehicleStore {
 public:
  // Opens the store at `location`: a postgresql:// URL (store/pg_db.h) or a
  // SQLite file, created if absent, migrated to the current schema either
  // way; ":memory:" for tests. Errors as JobStore::open().
  static Result<std::unique_ptr<VehicleStore>> open(const std::string& location);

  virtual ~VehicleStore() = default;

  // Every vehicle, by id.
  virtual Result<std::vector<VehicleRecord>> vehicles() = 0;
  // The vehicle with this id, or nullopt (an id that is not a vehicle id too).
  virtual Result<std::optional<VehicleRecord>> vehicle(const std::string& vehicle_id) = 0;

  // Pins a vehicle's key. Ok if it is already pinned to the same key;
  // kAlreadyExists if it is pinned to another; kInvalidArgument for a bad id
  // or key.
  virtual Status put_vehicle(const VehicleRecord& v) = 0;

  // The policy the owner set for a vehicle, or nullopt if none was set (the
  // agent then enforces the policy it was started with). A row that does not
  // decode is kCorrupt.
  virtual Result<std::optional<StoredPolicy>> policy(const std::string& vehicle_id) = 0;
  // Sets (replaces) a vehicle's policy. kInvalidArgument for a bad id or an
  // invalid policy.
  virtual Status put_policy(const std::string& vehicle_id, const core::OwnerPolicy& policy, core::TimeMs now) = 0;

  // Stores an accepted receipt; false (and nothing written) if one for the
  // same (job, attempt) is already stored: a replay.
  virtual Result<bool> put_receipt(const core::ReceiptMessage& r, const std::string& owner_id,
                                   core::TimeMs accepted_at) = 0;

  // The receipts of one job, by attempt.
  virtual Result<std::vector<StoredReceipt>> receipts_for_job(const std::string& job_id) = 0;

  // Every stored receipt's job, attempt and whether it metered anything
  // (energy or wear), by job (for `idlefleet ledger verify`).
  struct ReceiptKey {
    std::string job_id;
    uint32_t attempt = 0;
    bool metered = false;
  };
  virtual Result<std::vector<ReceiptKey>> receipt_keys() = 0;

  // Owners. create_owner returns the owner and its token (shown once).
  // kInvalidArgument for a bad name, kOutOfRange beyond kOwnersMax owners.
  virtual Result<std::pair<Owner, std::string>> create_owner(const std::string& name, core::TimeMs now) = 0;
  // Every owner, oldest first (created_at, then id).
  virtual Result<std::vector<Owner>> owners() = 0;
  // The owner a token belongs to, or nullopt (a token of the wrong shape too).
  virtual Result<std::optional<Owner>> owner_by_token(std::string_view token) = 0;

  // A one-time enrolment code for the owner, valid kEnrolmentCodeTtlMs.
  // kOutOfRange when the owner already has kOpenCodesPerOwnerMax unused ones.
  virtual Result<std::string> create_code(const std::string& owner_id, core::TimeMs now) = 0;

  // Enrols a vehicle with a code: pins its key to the code's owner and uses
  // the code up, in one transaction. kNotFound: no such code; kAlreadyExists:
  // the code was used, or the vehicle is pinned to another key or enrolled
  // to another owner; kOutOfRange: the code expired; kInvalidArgument: a bad
  // id or key. Enrolling again with the same key to the same owner is fine.
  virtual Result<VehicleRecord> enrol(std::string_view code, const std::string& vehicle_id,
                                      const std::string& public_key, core::TimeMs now) = 0;

  // A vehicle's verification standing, written whenever it changes.
  // kInvalidArgument for a bad id or a standing out of range.
  virtual Status put_standing(const std::string& vehicle_id, const core::VehicleStanding& s, core::TimeMs now) = 0;
  // Every stored standing, by vehicle id (read back at start).
  virtual Result<std::vector<std::pair<std::string, core::VehicleStanding>>> standings() = 0;
  // The vehicles enrolled to an owner, by id.
  virtual Result<std::vector<VehicleRecord>> vehicles_of(const std::string& owner_id) = 0;

  // What the store was opened on: the path as given to open(), or the URL
  // without its password.
  virtual const std::string& location() const = 0;

 protected:
  VehicleStore() = default;
  VehicleStore(const VehicleStore&) = delete;
  VehicleStore& operator=(const VehicleStore&) = delete;
};

// What both implementations share (store/vehicle_store.cc): the checks of
// what is written and of what is read back, and the secrets.
namespace vehicle_rows {

// 64 lower-case hex digits.
bool public_key_well_formed(std::string_view key);
// The SHA-256 of a secret (an owner token, an enrolment code), as the 32
// bytes stored.
std::string digest(std::string_view secret);

// put_vehicle's checks (kInvalidArgument).
Status check_vehicle(const VehicleRecord& v);
// enrol's checks of the vehicle id and key (kInvalidArgument).
Status check_enrolment(const std::string& vehicle_id, const std::string& public_key);
// A vehicle row read back (kCorrupt naming it).
Status check_vehicle_row(const VehicleRecord& v);
// kCorrupt once a listing holds more than `max` rows of `what`.
Status check_rows(size_t rows, size_t max, const char* what);

// put_policy's checks (kInvalidArgument).
Status check_policy(const std::string& vehicle_id, const core::OwnerPolicy& policy);
// A policy row read back (kCorrupt naming the vehicle when it does not decode).
Result<StoredPolicy> policy_row(const std::string& vehicle_id, std::string_view policy_json, core::TimeMs updated_at);

// A receipt row read back: it decodes, and is of this job and attempt
// (kCorrupt otherwise). `receipts` is how many of the job's came before.
Result<StoredReceipt> receipt_row(const std::string& job_id, size_t receipts, std::string_view receipt_json,
                                  int64_t attempt, std::string owner_id, core::TimeMs accepted_at);
// A receipt_keys() row read back (kCorrupt for an attempt out of range).
Result<VehicleStore::ReceiptKey> receipt_key_row(std::string job_id, int64_t attempt, bool metered);

// create_owner's checks (kInvalidArgument for the name, kOutOfRange when
// there are kOwnersMax owners already); then a new owner and its token.
Status check_new_owner(const std::string& name, uint64_t owners);
std::pair<Owner, std::string> new_owner(const std::string& name, core::TimeMs now);
// An owner row read back (kCorrupt naming it).
Status check_owner_row(const Owner& o);
// True for a token of the shape create_owner makes.
bool owner_token_well_formed(std::string_view token);

// create_code's check (kOutOfRange at kOpenCodesPerOwnerMax open codes); a new code.
Status check_open_codes(const std::string& owner_id, uint64_t open_codes);
std::string new_code();

// An enrolment code as stored.
struct CodeRow {
  std::string owner_id;
  core::TimeMs expires_at = 0;
  std::string used_by;  // "" unused
};
// enrol's decision, given the code and the vehicle as stored: the vehicle
// row to write, or why not (the errors enrol() documents).
Result<VehicleRecord> enrolment(const CodeRow& code, const std::optional<VehicleRecord>& existing,
                                const std::string& vehicle_id, const std::string& public_key, core::TimeMs now);

// put_standing's checks (kInvalidArgument).
Status check_standing(const std::string& vehicle_id, const core::VehicleStanding& s);
// A standing row read back (kCorrupt naming the vehicle).
Result<core::VehicleStanding> standing_row(const std::string& vehicle_id, int64_t standing, int64_t agreed,
                                           int64_t faulted, int64_t since, int64_t quarantined,
                                           std::string quarantine_reason, core::TimeMs quarantined_at);

}  // namespace vehicle_rows

}  // namespace idlefleet::store
