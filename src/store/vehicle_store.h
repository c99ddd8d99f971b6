// VehicleStore: each vehicle's Ed25519 public key (what its receipts are
// checked against) and the receipts the coordinator accepted, in SQLite
// (`<data_dir>/vehicles.sqlite3`).
//
// A key is pinned the first time a vehicle presents one (put_vehicle) and
// never silently replaced: a vehicle that comes back with another key is
// refused until an operator removes the old one. Receipts are keyed by
// (job, attempt), so a replayed receipt is refused by the store itself
// (put_receipt returns false), across restarts too. The settlement of a job
// reads its receipts back (receipts_for_job).
//
// Durability: WAL, synchronous=FULL: receipts are what owners are paid by.
//
// Schema (migrations as in sqlite_db.h):
//   vehicles: vehicle_id TEXT PK | public_key TEXT (64 hex) | owner_id TEXT
//     ("" until enrolled to an owner) | pinned_at INTEGER (TimeMs)
//   receipts: job_id TEXT | attempt INTEGER | vehicle_id TEXT | owner_id TEXT |
//     receipt_json TEXT (the message as received, signature included) |
//     accepted_at INTEGER; PRIMARY KEY (job_id, attempt)
//   owners (migration 2): id TEXT PK | name TEXT | token_sha256 BLOB UNIQUE |
//     created_at INTEGER
//   enrolment_codes (migration 2): code_sha256 BLOB PK | owner_id TEXT |
//     created_at, expires_at INTEGER | used_by TEXT ("" unused) | used_at INTEGER
//   vehicle_policies (migration 3): vehicle_id TEXT PK | policy_json TEXT
//     (core::encode_policy) | updated_at INTEGER: the policy the vehicle's
//     owner set (owner API), sent to the vehicle on its every hello
//   standings (migration 4): vehicle_id TEXT PK | standing INTEGER (0..1000) |
//     checks_agreed, checks_faulted, agreed_since_fault INTEGER |
//     quarantined INTEGER (0/1) | quarantine_reason TEXT | quarantined_at
//     INTEGER | updated_at INTEGER: verification (core/verification.h)
// Every row read is validated (kCorrupt naming the row, never a crash).
//
// Thread-safety: none: one thread at a time (the coordinator's loop thread).
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "common/result.h"
#include "core/protocol.h"
#include "core/time.h"
#include "core/verification.h"

struct sqlite3;

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

class VehicleStore {
 public:
  // Opens (creating if absent) the database at `path`; ":memory:" for tests.
  static Result<std::unique_ptr<VehicleStore>> open(const std::string& path);

  ~VehicleStore();
  VehicleStore(const VehicleStore&) = delete;
  VehicleStore& operator=(const VehicleStore&) = delete;

  // Every vehicle, by id.
  Result<std::vector<VehicleRecord>> vehicles();
  Result<std::optional<VehicleRecord>> vehicle(const std::string& vehicle_id);

  // Pins a vehicle's key. Ok if it is already pinned to the same key;
  // kAlreadyExists if it is pinned to another; kInvalidArgument for a bad id
  // or key.
  Status put_vehicle(const VehicleRecord& v);

  // The policy the owner set for a vehicle, or nullopt if none was set (the
  // agent then enforces the policy it was started with). A row that does not
  // decode is kCorrupt.
  Result<std::optional<StoredPolicy>> policy(const std::string& vehicle_id);
  // Sets (replaces) a vehicle's policy. kInvalidArgument for a bad id or an
  // invalid policy.
  Status put_policy(const std::string& vehicle_id, const core::OwnerPolicy& policy, core::TimeMs now);

  // Stores an accepted receipt; false (and nothing written) if one for the
  // same (job, attempt) is already stored: a replay.
  Result<bool> put_receipt(const core::ReceiptMessage& r, const std::string& owner_id, core::TimeMs accepted_at);

  // The receipts of one job, by attempt.
  Result<std::vector<StoredReceipt>> receipts_for_job(const std::string& job_id);

  // Every stored receipt's job, attempt and whether it metered anything
  // (energy or wear), by job (for `idlefleet ledger verify`).
  struct ReceiptKey {
    std::string job_id;
    uint32_t attempt = 0;
    bool metered = false;
  };
  Result<std::vector<ReceiptKey>> receipt_keys();

  // Owners. create_owner returns the owner and its token (shown once).
  Result<std::pair<Owner, std::string>> create_owner(const std::string& name, core::TimeMs now);
  Result<std::vector<Owner>> owners();
  // The owner a token belongs to, or nullopt (a token of the wrong shape too).
  Result<std::optional<Owner>> owner_by_token(std::string_view token);

  // A one-time enrolment code for the owner, valid kEnrolmentCodeTtlMs.
  // kOutOfRange when the owner already has kOpenCodesPerOwnerMax unused ones.
  Result<std::string> create_code(const std::string& owner_id, core::TimeMs now);

  // Enrols a vehicle with a code: pins its key to the code's owner and uses
  // the code up, in one transaction. kNotFound: no such code; kAlreadyExists:
  // the code was used, or the vehicle is pinned to another key or enrolled
  // to another owner; kOutOfRange: the code expired; kInvalidArgument: a bad
  // id or key. Enrolling again with the same key to the same owner is fine.
  Result<VehicleRecord> enrol(std::string_view code, const std::string& vehicle_id, const std::string& public_key,
                              core::TimeMs now);

  // A vehicle's verification standing, written whenever it changes.
  Status put_standing(const std::string& vehicle_id, const core::VehicleStanding& s, core::TimeMs now);
  // Every stored standing, by vehicle id (read back at start).
  Result<std::vector<std::pair<std::string, core::VehicleStanding>>> standings();
  // The vehicles enrolled to an owner, by id.
  Result<std::vector<VehicleRecord>> vehicles_of(const std::string& owner_id);

  const std::string& path() const { return path_; }

 private:
  VehicleStore(std::string path, sqlite3* db) : path_(std::move(path)), db_(db) {}
  Unexpected error(int rc, const std::string& what) const;

  std::string path_;
  sqlite3* db_ = nullptr;
};

}  // namespace idlefleet::store
